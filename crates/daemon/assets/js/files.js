// Sandbox file browser: `fs/list` to navigate, `files?path=` to view small
// text files and to download.

import { api, enc } from './api.js';
import { h, fmtBytes, relTime } from './dom.js';

const PREVIEW_MAX = 512 * 1024;

function join(dir, name) {
  return dir === '/' ? `/${name}` : `${dir}/${name}`;
}
function parent(path) {
  if (path === '/') return '/';
  const i = path.lastIndexOf('/');
  return i <= 0 ? '/' : path.slice(0, i);
}

export class Files {
  /** els: {list, crumbs, error, up, refresh, view, viewName, viewBody, download, close}; hooks: {onError(e)} */
  constructor(els, hooks = {}) {
    this.els = els;
    this.hooks = hooks;
    this.sandbox = null;
    this.path = '/root';
    this.viewing = null;
    this.seq = 0;
    els.up.addEventListener('click', () => this.open(parent(this.path)));
    els.refresh.addEventListener('click', () => this.open(this.path));
    els.close.addEventListener('click', () => this.closeView());
    els.download.addEventListener('click', () => this.viewing && this.download(this.viewing));
  }

  setSandbox(name) {
    if (name === this.sandbox) return;
    this.sandbox = name;
    this.path = '/root';
    this.closeView();
    this.els.list.replaceChildren();
    this.els.crumbs.replaceChildren();
    this.els.error.textContent = '';
  }

  base() {
    return `/v1/sandboxes/${enc(this.sandbox)}`;
  }

  renderCrumbs() {
    const c = this.els.crumbs;
    c.replaceChildren();
    const parts = this.path.split('/').filter(Boolean);
    const mk = (label, path, last) => h('li', {},
      last ? h('span', { 'aria-current': 'location' }, label)
        : h('button', { type: 'button', class: 'link', onclick: () => this.open(path) }, label));
    c.append(mk('/', '/', parts.length === 0));
    parts.forEach((p, i) => c.append(mk(p, '/' + parts.slice(0, i + 1).join('/'), i === parts.length - 1)));
    this.els.up.disabled = this.path === '/';
  }

  async open(path) {
    if (!this.sandbox) return;
    const seq = ++this.seq;
    this.els.error.textContent = '';
    this.els.list.setAttribute('aria-busy', 'true');
    let data;
    try {
      data = await api(`${this.base()}/fs/list?path=${enc(path)}`);
    } catch (e) {
      if (seq !== this.seq) return;
      this.els.list.removeAttribute('aria-busy');
      this.els.error.textContent = e.status === 404 ? `${path}: no such directory` : e.message;
      this.hooks.onError?.(e);
      return;
    }
    if (seq !== this.seq) return;
    this.path = path;
    this.renderCrumbs();
    const entries = (data.entries || []).slice().sort((a, b) =>
      (a.kind === 'dir' ? 0 : 1) - (b.kind === 'dir' ? 0 : 1) || a.name.localeCompare(b.name));
    const list = this.els.list;
    list.removeAttribute('aria-busy');
    list.replaceChildren(...entries.map((e) => {
      const full = join(path, e.name);
      const isDir = e.kind === 'dir';
      return h('li', { class: `entry kind-${e.kind}` },
        h('button', {
          type: 'button', class: 'entry-open',
          title: isDir ? `Open ${full}` : `View ${full}`,
          onclick: () => (isDir ? this.open(full) : e.kind === 'symlink' ? this.openLink(full, e) : this.view(full, e)),
        },
        h('span', { class: 'entry-icon', 'aria-hidden': 'true' }),
        h('span', { class: 'entry-name' }, e.name + (isDir ? '/' : '')),
        h('span', { class: 'entry-size' }, isDir ? '' : fmtBytes(e.size)),
        h('span', { class: 'entry-time' }, relTime(e.mtime))),
        isDir ? null : h('button', {
          type: 'button', class: 'ghost small entry-dl', title: `Download ${e.name}`,
          'aria-label': `Download ${e.name}`, onclick: () => this.download(full),
        }, '↓'));
    }));
    if (!entries.length) list.append(h('li', { class: 'muted small empty' }, 'Empty directory'));
  }

  /** A symlink: a directory if it lists, else a file. */
  async openLink(full, e) {
    try {
      await api(`${this.base()}/fs/list?path=${enc(full)}`);
      this.open(full);
    } catch {
      this.view(full, e);
    }
  }

  closeView() {
    this.viewing = null;
    this.els.view.hidden = true;
    this.els.viewBody.textContent = '';
  }

  async view(path, entry = {}) {
    this.viewing = path;
    this.els.view.hidden = false;
    this.els.viewName.textContent = path;
    const body = this.els.viewBody;
    body.classList.remove('muted');
    if (entry.size > PREVIEW_MAX) {
      body.classList.add('muted');
      body.textContent = `This file is ${fmtBytes(entry.size)}; too large to preview here. Download it instead.`;
      return;
    }
    body.textContent = 'Loading…';
    try {
      const res = await api(`${this.base()}/files?path=${enc(path)}`, { raw: true });
      const buf = new Uint8Array(await res.arrayBuffer());
      if (this.viewing !== path) return;
      if (buf.subarray(0, 8192).includes(0)) {
        body.classList.add('muted');
        body.textContent = `Binary file (${fmtBytes(buf.length)}). Download it to open it.`;
      } else {
        body.textContent = new TextDecoder().decode(buf.subarray(0, PREVIEW_MAX));
      }
    } catch (e) {
      if (this.viewing === path) body.textContent = `Could not read ${path}: ${e.message}`;
    }
  }

  async download(path) {
    try {
      const res = await api(`${this.base()}/files?path=${enc(path)}`, { raw: true });
      const url = URL.createObjectURL(await res.blob());
      const a = h('a', { href: url, download: path.split('/').pop() || 'download' });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (e) {
      this.els.error.textContent = `Download failed: ${e.message}`;
    }
  }
}
