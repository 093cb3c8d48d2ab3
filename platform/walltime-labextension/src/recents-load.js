// HPCLab: JupyterLab's list of recent documents is not written back, unchanged, at every page load (issue 32).
//
// JupyterLab's RecentsManager reads the recent documents from the state database when the lab starts and then
// saves them again, through a 500 ms debouncer, whether or not anything changed. That save changes the state
// database, whose own workspace save is debounced by another 500 ms, and the router waits for that save before it
// restores the file browser and opens the launcher: one second of every page load is two timers in a row. Here the
// load holds its saves back and writes only when checking the list changed it (a document gone, a list cut to the
// maximal length). It uses RecentsManager's private members (JupyterLab 4.6); where they are not there, JupyterLab's
// own load runs unchanged.
import { RecentsManager } from '@jupyterlab/docmanager';

const STATE_KEY = 'docmanager:recents';
const load = RecentsManager.prototype._loadRecents;

async function loadWithoutRewriting() {
  const saves = this._saveDebouncer;
  if (!saves || typeof saves.invoke !== 'function' || !this._stateDB) {
    return load.call(this);
  }
  const invoke = saves.invoke;
  let asked = false;
  saves.invoke = () => {
    asked = true;
    return Promise.resolve();
  };
  try {
    await load.call(this);
  } finally {
    saves.invoke = invoke;
  }
  if (asked) {
    const stored = (await this._stateDB.fetch(STATE_KEY)) || { opened: [], closed: [] };
    if (JSON.stringify(stored) !== JSON.stringify(this._recents)) {
      saves.invoke().catch(console.warn);
    }
  }
}

if (typeof load === 'function') {
  RecentsManager.prototype._loadRecents = loadWithoutRewriting;
}
