// Small DOM helpers. Everything the UI shows is built with these (or
// textContent): no innerHTML, so nothing from the server is ever parsed as
// markup.

/** h('div', {class: 'x', onclick: fn}, 'text', child) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k in el && typeof v !== 'string') el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

export const $ = (sel, root = document) => root.querySelector(sel);

export function fmtBytes(n) {
  if (n === undefined || n === null) return '';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return i === 0 ? `${v} B` : `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

/** "3 min ago" for an RFC 3339 time (or epoch seconds). */
export function relTime(t) {
  if (t === undefined || t === null) return '';
  const ms = typeof t === 'number' ? (t < 1e12 ? t * 1000 : t) : Date.parse(t);
  if (Number.isNaN(ms)) return '';
  const s = Math.round((Date.now() - ms) / 1000);
  if (s < 45) return 'just now';
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  if (s < 7 * 86400) return `${Math.round(s / 86400)} d ago`;
  return new Date(ms).toLocaleDateString();
}

export function fmtCost(usd) {
  const v = Number(usd || 0);
  if (v === 0) return '$0';
  if (v < 0.01) return `$${v.toFixed(4)}`;
  return `$${v.toFixed(2)}`;
}

export function fmtInt(n) {
  return Number(n || 0).toLocaleString('en-US');
}

/**
 * Render assistant/user text: fenced ``` blocks become <pre><code>, `inline`
 * code becomes <code>, the rest stays plain text (white-space: pre-wrap).
 */
export function renderText(container, text) {
  container.replaceChildren();
  const parts = String(text).split(/^```[^\n]*\n?/m);
  parts.forEach((part, i) => {
    if (i % 2 === 1) {
      container.append(h('pre', { class: 'code' }, h('code', {}, part.replace(/\n$/, ''))));
    } else if (part) {
      const p = h('span', { class: 'prose' });
      part.split(/(`[^`\n]+`)/).forEach((seg) => {
        if (seg.length > 2 && seg.startsWith('`') && seg.endsWith('`')) p.append(h('code', {}, seg.slice(1, -1)));
        else if (seg) p.append(seg);
      });
      container.append(p);
    }
  });
}

/** Pretty JSON for tool inputs, a plain string stays as it is. */
export function pretty(v) {
  if (typeof v === 'string') return v;
  try { return JSON.stringify(v, null, 2); } catch { return String(v); }
}
