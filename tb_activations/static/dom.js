// Small DOM helpers. Text from the data (run, layer and probe names) only
// ever reaches the page through textContent or attribute setters, never as HTML.

/**
 * Creates an element.
 * @param {string} tag
 * @param {Object} [props] `class`, `text`, `title`, `dataset`, `on*` handlers
 *   and any other attribute (set with setAttribute).
 * @param {...(Node|string|null)} children strings become text nodes.
 */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = String(value);
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') {
      node.addEventListener(key.slice(2), value);
    } else node.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(typeof child === 'string' ? document.createTextNode(child) : child);
  }
  return node;
}

/** Replaces every child of `node`. */
export function setChildren(node, ...children) {
  node.replaceChildren(...children.filter((c) => c !== null && c !== undefined && c !== false));
}

/** Fills a <select> with [value, label] pairs, keeping `selected` if present. */
export function setOptions(select, pairs, selected) {
  select.replaceChildren(...pairs.map(([value, label]) => new Option(label, value)));
  if (selected !== undefined && pairs.some(([v]) => v === selected)) select.value = selected;
}

/** A number for display: 4 significant digits, or the reason it has none. */
export function fmt(value) {
  if (value === null || value === undefined) return 'n/a';
  const x = Number(value);
  if (!Number.isFinite(x)) return String(value);
  if (x === 0) return '0';
  const abs = Math.abs(x);
  if (abs >= 1e4 || abs < 1e-3) return x.toExponential(2);
  return String(Number(x.toPrecision(4)));
}
