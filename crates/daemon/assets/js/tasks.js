// Scheduled tasks of the signed-in user: `GET /v1/tasks` with each task's
// schedule, next run and last result; a click shows its runs. Tasks are
// made in the chat ("every morning at 8, ...") or with `ironclaw task add`.

import { api, enc } from './api.js';
import { h, relTime } from './dom.js';

function schedule(t) {
  const w = t.at ? `at ${t.at}` : t.every ? `every ${t.every}` : `cron ${t.cron}`;
  return t.tz ? `${w} (${t.tz})` : w;
}

function outcome(r) {
  if (!r) return 'not run yet';
  if (r.state === 'failed') return `failed: ${r.error ?? ''}`;
  if (r.state === 'running') return 'running';
  return r.result ?? '';
}

export class Tasks {
  /** els: {list, error, refresh, runs} */
  constructor(els) {
    this.els = els;
    this.open = null;
    els.refresh.addEventListener('click', () => this.refresh());
  }

  async refresh() {
    this.els.error.textContent = '';
    let tasks;
    try {
      tasks = await api('/v1/tasks');
    } catch (e) {
      this.els.error.textContent = e.message;
      return;
    }
    const list = this.els.list;
    list.replaceChildren();
    if (!tasks.length) {
      list.append(h('li', { class: 'muted empty' }, 'No scheduled tasks. Ask the agent to schedule one, or use `ironclaw task add`.'));
    }
    for (const t of tasks) {
      const last = t.last_run;
      list.append(h('li', { class: 'task', dataset: { name: t.name } },
        h('button', { type: 'button', class: 'link task-name', onclick: () => this.showRuns(t.name) }, t.name),
        h('span', { class: 'muted small' }, ` ${schedule(t)}`),
        h('div', { class: 'small' }, t.next_run ? `next: ${t.next_run}` : 'no further runs'),
        h('div', { class: `small task-last ${last?.state === 'failed' ? 'error-text' : ''}` },
          last ? `${relTime(last.started_at)}: ${outcome(last)}` : outcome(null))));
    }
    if (this.open && tasks.some((t) => t.name === this.open)) await this.showRuns(this.open);
    else this.els.runs.replaceChildren();
  }

  async showRuns(name) {
    this.open = name;
    let runs;
    try {
      runs = await api(`/v1/tasks/${enc(name)}/runs`);
    } catch (e) {
      this.els.error.textContent = e.message;
      return;
    }
    const box = this.els.runs;
    box.replaceChildren(h('h3', { class: 'section-title' }, `Runs of ${name}`));
    if (!runs.length) box.append(h('p', { class: 'muted small' }, 'No runs yet.'));
    const ul = h('ul', { class: 'task-runs', 'aria-label': `Runs of ${name}` });
    for (const r of runs) {
      ul.append(h('li', { class: r.state === 'failed' ? 'error-text' : '' },
        h('div', { class: 'muted small' }, `${r.started_at} · ${r.state}`),
        h('pre', { class: 'task-result' }, outcome(r))));
    }
    box.append(ul);
  }
}
