// HPCLab: share this server read-only, from the lab (issue 30).
//
// jupyter-collaboration's share dialog makes edit shares only (it cannot send scopes). This command asks for a
// person or a group and makes a read-only share through JupyterHub's sharing API, with the lab's own token, which
// may manage this server's shares (hpclab_hub.web.sharing): the other person may open files and follow notebooks,
// not save, run code or open a terminal (hpclab.share_access enforces it in the server). A person who had an edit
// share has a read-only one afterwards; "Revoke" in the share dialog takes either back.
import { ICommandPalette, InputDialog, Notification } from '@jupyterlab/apputils';
import { PageConfig, URLExt } from '@jupyterlab/coreutils';
import { IMainMenu } from '@jupyterlab/mainmenu';

const COMMAND = 'hpclab:share-read-only';
export const READ_SCOPES = ['access:servers', 'custom:jupyter_server:read:*'];

/** `bob` → a share with the person bob; `group:tutors` → with the group tutors. */
export function shareTarget(text) {
  const name = text.trim();
  return name.startsWith('group:') ? { group: name.slice('group:'.length).trim() } : { user: name };
}

async function shareReadOnly(text) {
  const target = shareTarget(text);
  if (!target.user && !target.group) {
    throw new Error('give a user name, or group:<name>');
  }
  const owner = PageConfig.getOption('hubServerUser');
  const server = PageConfig.getOption('hubServerName');
  const api = URLExt.join(
    PageConfig.getOption('hubHost') || '',
    PageConfig.getOption('hubPrefix'),
    'api/shares',
    encodeURIComponent(owner),
    encodeURIComponent(server)
  );
  // the hub's path ends with the server's name, empty for the default server: JupyterHub wants the slash
  const url = server ? api : `${api}/`;
  const headers = { Authorization: `token ${PageConfig.getOption('token')}`, 'Content-Type': 'application/json' };
  // a share already given (say, an edit share from the share dialog) is taken back first: a second POST would only add
  // scopes to it, and the person would keep editing
  await fetch(url, { method: 'PATCH', headers, body: JSON.stringify(target) });
  const response = await fetch(url, { method: 'POST', headers, body: JSON.stringify({ ...target, scopes: READ_SCOPES }) });
  if (!response.ok) {
    let reason = `${response.status}`;
    try {
      reason = (await response.json()).message || reason;
    } catch (error) {
      // not JSON: keep the status
    }
    throw new Error(reason);
  }
  return target.user || `group ${target.group}`;
}

const shareReadOnlyPlugin = {
  id: '@hpclab/walltime:share-read-only',
  description: 'Shares this server read-only with a person or a group, through JupyterHub.',
  autoStart: true,
  optional: [ICommandPalette, IMainMenu],
  activate: (app, palette, mainMenu) => {
    const visitor = PageConfig.getOption('hubUser');
    if (!visitor || visitor !== PageConfig.getOption('hubServerUser')) {
      return; // not a JupyterHub server, or someone else's: only the owner shares it
    }
    app.commands.addCommand(COMMAND, {
      label: 'Share this server read-only…',
      caption: 'Let a person or a group open your files and notebooks, without saving, running code or terminals',
      execute: async () => {
        const answer = await InputDialog.getText({
          title: 'Share read-only',
          label: 'User name, or group:<name>',
          placeholder: 'bob or group:tutors',
          okLabel: 'Share'
        });
        if (!answer.button.accept || !answer.value) {
          return;
        }
        try {
          const whom = await shareReadOnly(answer.value);
          Notification.success(`Shared read-only with ${whom}. They find it on their hub home page.`, {
            autoClose: 8000
          });
        } catch (error) {
          Notification.error(`Not shared: ${error.message}`, { autoClose: false });
        }
      }
    });
    if (palette) {
      palette.addItem({ command: COMMAND, category: 'Hub' });
    }
    if (mainMenu) {
      mainMenu.fileMenu.addGroup([{ command: COMMAND }], 100);
    }
  }
};

export default shareReadOnlyPlugin;
