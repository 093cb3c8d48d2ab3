// HPCLab: a JupyterLab window claims its workspace's name at once (issue 32).
//
// Two browser windows must not write the same workspace. JupyterLab's own resolver finds out whether another
// window holds a name by announcing it in localStorage and then waiting 200-500 ms for an objection; every
// page load waits that long before the layout can be restored. Here the name is a Web Lock
// (navigator.locks, every current browser in a secure context): the lock is free or held, answered without
// a wait, and it is held for as long as the window lives, also while a background tab is frozen. Where the
// Web Locks API is missing (a page served over plain http from another host name), JupyterLab's resolver is
// used as before. A window whose name is taken opens a fresh workspace of its own, as JupyterLab does.
import { IRouter, JupyterFrontEnd } from '@jupyterlab/application';
import { IWindowResolver, WindowResolver } from '@jupyterlab/apputils';
import { PageConfig, URLExt } from '@jupyterlab/coreutils';

/** A window's name, held as a Web Lock of this origin (one user's lab) for the window's lifetime. */
export class LockedWindowName {
  constructor(locks) {
    this._locks = locks;
    this._name = '';
  }

  get name() {
    return this._name;
  }

  /** Claim `candidate`; rejects at once if another window of this origin holds it. */
  async resolve(candidate) {
    const claimed = await new Promise((answer, fail) => {
      this._locks
        .request(`@hpclab/workspace:${candidate}`, { ifAvailable: true }, lock => {
          answer(lock !== null);
          // the lock is released when the returned promise settles: never, so the window keeps it until it closes
          return lock === null ? undefined : new Promise(() => undefined);
        })
        .catch(fail);
    });
    if (!claimed) {
      throw new Error(`the workspace "${candidate}" is open in another window`);
    }
    this._name = candidate;
  }
}

/** The address of a new workspace for this window, keeping the rest of what was asked (file, query, hash). */
function freshWorkspaceUrl(paths, router) {
  const { hash, search } = router.current;
  const query = URLExt.queryStringToObject(search || '');
  query.reset = ''; // a fresh workspace starts from the default layout
  const mode = PageConfig.getOption('mode') === 'multiple-document' ? 'lab' : 'doc';
  const letters = 'abcdefghijklmnopqrstuvwxyz0123456789';
  const name = `auto-${letters[Math.floor(Math.random() * letters.length)]}`;
  const treePath = PageConfig.getOption('treePath');
  const workspace = URLExt.join(paths.urls.base, mode, 'workspaces', name);
  const path = treePath ? URLExt.join(workspace, 'tree', URLExt.encodeParts(treePath)) : workspace;
  return path + URLExt.objectToQueryString(query) + (hash || '');
}

const windowName = {
  id: '@hpclab/walltime:window-name',
  description: "Resolves the window's workspace name with a Web Lock instead of a timed localStorage poll.",
  autoStart: true,
  provides: IWindowResolver,
  requires: [JupyterFrontEnd.IPaths, IRouter],
  activate: async (app, paths, router) => {
    const candidate = PageConfig.getOption('workspace') || PageConfig.defaultWorkspace;
    const resolver = navigator.locks ? new LockedWindowName(navigator.locks) : new WindowResolver();
    try {
      await resolver.resolve(candidate);
      return resolver;
    } catch (error) {
      console.info(`hpclab: ${error.message || error}; this window opens a workspace of its own`);
      router.navigate(freshWorkspaceUrl(paths, router), { hard: true });
      return new Promise(() => undefined); // the page is leaving: nothing that needs a resolver starts
    }
  }
};

export default windowName;
