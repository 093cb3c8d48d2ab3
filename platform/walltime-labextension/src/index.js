// HPCLab wall-time guard for JupyterLab.
//
// A job that reaches its wall time is stopped by the scheduler, and edits that only live in the
// browser are lost. This plugin asks the server (hpclab.walltime) every few seconds how long the job
// has left, shows it in the top bar, warns before the end and saves every open document: once at the
// warning, when SLURM's early signal arrives (sbatch --signal), and on every check in the final minutes.
import { Widget } from '@lumino/widgets';

import './recents-load';
import shareReadOnly from './share-read-only';
import windowName from './window-name';

const CHECK_EVERY_MS = 10000;
const EXTEND_MINUTES = 30; // what one click of "Extend" asks for (less when the profile allows less)

/** "1 h 05 min", "12 min", "40 s": the time left as people read it. */
export function formatLeft(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  if (s >= 3600) {
    const minutes = Math.floor((s % 3600) / 60);
    return `${Math.floor(s / 3600)} h ${String(minutes).padStart(2, '0')} min`;
  }
  if (s >= 60) {
    return `${Math.floor(s / 60)} min`;
  }
  return `${s} s`;
}

/**
 * An end time as the hub's pages write it ("14:05 UTC"), with the browser's own clock beside it where
 * that differs ("14:05 UTC, 15:05 here"), so the two never seem to disagree.
 */
function clockText(epochSeconds) {
  const when = new Date(epochSeconds * 1000);
  const two = n => String(n).padStart(2, '0');
  const utc = `${two(when.getUTCHours())}:${two(when.getUTCMinutes())} UTC`;
  const local = `${two(when.getHours())}:${two(when.getMinutes())}`;
  return when.getTimezoneOffset() === 0 ? utc : `${utc}, ${local} here`;
}

/** The top-bar label: "Job: 12 min left", coloured once the warning time is reached. */
class TimeLeft extends Widget {
  constructor() {
    super();
    this.id = 'hpclab-walltime';
    this.addClass('hpclab-walltime');
    this.hide();
  }

  showLeft(left, endsAt, level, extendable, onExtend) {
    this.node.textContent = `Job: ${formatLeft(left)} left`;
    this.node.title = `This session's wall time ends at ${endsAt}; open documents are saved before then.`;
    this.node.dataset.level = level;
    const minutes = Math.min(EXTEND_MINUTES, extendable || 0);
    if (minutes > 0) {
      const button = document.createElement('button');
      button.className = 'hpclab-walltime-extend';
      button.textContent = `Extend by ${formatLeft(minutes * 60)}`;
      button.title = `Ask the hub for ${minutes} more minutes (up to ${formatLeft(extendable * 60)} more are allowed)`;
      button.addEventListener('click', () => onExtend(minutes, button));
      this.node.appendChild(button);
    }
    this.show();
  }
}

/** The server's _xsrf cookie (Jupyter Server checks it on POST requests made with the session cookie). */
function xsrfToken() {
  const match = document.cookie.match('\\b_xsrf=([^;]*)\\b');
  return match ? decodeURIComponent(match[1]) : '';
}

async function requestExtension(app, minutes) {
  const settings = app.serviceManager.serverSettings;
  const headers = { 'Content-Type': 'application/json', 'X-XSRFToken': xsrfToken() };
  if (settings.token) {
    headers.Authorization = `token ${settings.token}`;
  }
  const response = await fetch(`${settings.baseUrl}hpclab/walltime/extend`, {
    method: 'POST', credentials: 'same-origin', headers, body: JSON.stringify({ minutes })
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error(answer.message || `the hub answered ${response.status}`);
  }
  return answer;
}

async function fetchStatus(app) {
  const settings = app.serviceManager.serverSettings;
  const headers = settings.token ? { Authorization: `token ${settings.token}` } : {};
  const response = await fetch(`${settings.baseUrl}hpclab/walltime`, { credentials: 'same-origin', headers });
  if (!response.ok) {
    throw new Error(`hpclab/walltime answered ${response.status}`);
  }
  return response.json();
}

const plugin = {
  id: '@hpclab/walltime:plugin',
  description: "Shows the job's time left, warns before the end and saves open documents before the scheduler stops the job.",
  autoStart: true,
  activate: app => {
    const label = new TimeLeft();
    app.shell.add(label, 'top', { rank: 900 });
    let warned = false;
    let signalSeen = false;

    const saveAll = async () => {
      try {
        await app.commands.execute('docmanager:save-all');
      } catch (error) {
        console.warn('hpclab walltime: saving open documents failed', error);
      }
    };
    const notify = (message, type = 'warning') =>
      app.commands
        .execute('apputils:notify', { message, type, options: { autoClose: type === 'success' ? 8000 : false } })
        .catch(() => window.alert(message));

    const extend = async (minutes, button) => {
      button.disabled = true;
      try {
        const answer = await requestExtension(app, minutes);
        warned = answer.end - answer.now <= answer.warn_before; // warn again before the new end
        notify(`This session now ends at ${clockText(answer.end)} (wall time ${answer.time_limit}).`, 'success');
      } catch (error) {
        notify(`The wall time was not extended: ${error.message}`);
      }
      await check();
    };

    const check = async () => {
      let status;
      try {
        status = await fetchStatus(app);
      } catch (error) {
        return; // the server is stopping or busy: try again on the next check
      }
      if (status.end === null) {
        label.hide();
        return;
      }
      const left = Math.max(0, status.end - status.now);
      const endsAt = clockText(status.end);
      const final = status.signalled || left <= status.save_before;
      label.showLeft(left, endsAt, final ? 'final' : left <= status.warn_before ? 'warning' : 'ok',
        status.extendable_minutes, extend);
      if (status.signalled && !signalSeen) {
        signalSeen = true;
        await saveAll();
        notify(
          `The scheduler stops this job in about ${formatLeft(left)} (at ${endsAt}). ` +
            'Every open document has been saved and is saved again until the end.'
        );
      } else if (left <= status.warn_before && !warned) {
        warned = true;
        await saveAll();
        notify(
          `This session ends in ${formatLeft(left)} (at ${endsAt}). Open documents have been saved; ` +
            'start a new session from the hub to go on after that.'
        );
      } else if (final) {
        await saveAll(); // last minutes: keep what is typed on disk, whatever the autosave setting
      }
    };

    // first check once the shell (and its notification toasts) is up
    void app.restored.then(() => {
      void check();
      window.setInterval(check, CHECK_EVERY_MS);
    });
  }
};

export default [plugin, windowName, shareReadOnly];
