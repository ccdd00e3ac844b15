// The "Activation histogram" panel: the distribution of the layer's activations
// over the probes at the shown step, as bars. The data are the `<layer>/histogram`
// tag the logger writes for TensorBoard's stock Histograms and Distributions tabs
// (GET /histogram), so this panel and those tabs show the same buckets.

import {el, fmt, setChildren} from './dom.js';

const NS = 'http://www.w3.org/2000/svg';
const CACHE_LIMIT = 400; // answers kept (one per run, layer and step): Play reads each once

function svg(tag, attrs = {}) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

function text(x, y, content, anchor = 'start') {
  const node = svg('text', {x, y, 'text-anchor': anchor, class: 'tba-chart-label'});
  node.textContent = content;
  return node;
}

/**
 * An SVG bar chart of histogram `buckets` ([[left, right, count], ...]; null where not finite).
 * @param {Array} buckets
 * @param {{width?: number, height?: number, log?: boolean, label?: string}} options
 *   `log` draws log10(1 + count) (a ReLU layer's spike at 0 otherwise flattens
 *   the rest); `label` names the chart for screen readers. Hovering a bar shows
 *   its interval, count and share of the values.
 */
export function histogramChart(buckets, {width = 400, height = 150, log = false, label = ''} = {}) {
  const pad = {left: 44, right: 10, top: 16, bottom: 20};
  const root = svg('svg', {width, height, viewBox: `0 0 ${width} ${height}`, class: 'tba-chart tba-histogram-chart',
    role: 'img'});
  const bars = buckets.filter(([l, r, c]) => l !== null && r !== null && c !== null && r >= l);
  const total = bars.reduce((sum, b) => sum + Math.max(b[2], 0), 0);
  const title = svg('title');
  root.append(title);
  if (!bars.length) {
    title.textContent = `${label}: no finite buckets`;
    root.setAttribute('aria-label', title.textContent);
    root.append(text(width / 2, height / 2, 'no finite buckets', 'middle'));
    return root;
  }
  const x0 = Math.min(...bars.map((b) => b[0]));
  const x1 = Math.max(...bars.map((b) => b[1]));
  title.textContent = `${label}: ${bars.length} buckets from ${fmt(x0)} to ${fmt(x1)}, ${total} values`;
  root.setAttribute('aria-label', title.textContent);
  const height1 = (c) => (log ? Math.log10(1 + Math.max(c, 0)) : Math.max(c, 0));
  const top = Math.max(...bars.map((b) => height1(b[2]))) || 1;
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const sx = (v) => pad.left + (x1 === x0 ? 0.5 : (v - x0) / (x1 - x0)) * plotW;
  const sy = (v) => pad.top + (1 - v / top) * plotH;
  root.append(svg('rect', {x: pad.left, y: pad.top, width: plotW, height: plotH, class: 'tba-chart-frame'}));
  if (x0 < 0 && x1 > 0) {
    // Zero: where a ReLU layer's mass sits, and where signs change.
    const x = sx(0).toFixed(1);
    root.append(svg('line', {x1: x, x2: x, y1: pad.top, y2: pad.top + plotH, class: 'tba-chart-zero'}));
  }
  const rects = bars.map(([l, r, c], i) => {
    const left = sx(l);
    const w = Math.max(sx(r) - left - (plotW / bars.length > 3 ? 1 : 0), 0.5);
    const y = sy(height1(c));
    const rect = svg('rect', {x: left.toFixed(1), y: y.toFixed(1), width: w.toFixed(1),
      height: Math.max(pad.top + plotH - y, 0).toFixed(1), class: 'tba-hist-bar', 'data-index': i});
    root.append(rect);
    return rect;
  });
  const maxCount = Math.max(...bars.map((b) => b[2]));
  root.append(text(pad.left - 4, pad.top + 8, fmt(maxCount), 'end'));
  root.append(text(pad.left - 4, pad.top + plotH, '0', 'end'));
  root.append(text(pad.left, pad.top - 4, log ? 'count (log)' : 'count'));
  root.append(text(pad.left, height - 4, fmt(x0)));
  root.append(text(pad.left + plotW / 2, height - 4, 'activation', 'middle'));
  root.append(text(pad.left + plotW, height - 4, fmt(x1), 'end'));
  const readout = text(width - pad.right, 11, '', 'end');
  readout.classList.add('tba-chart-readout');
  root.append(readout);
  let hovered = null;
  const clear = () => {
    hovered?.classList.remove('tba-hover');
    hovered = null;
    readout.textContent = '';
  };
  root.addEventListener('mousemove', (event) => {
    const box = root.getBoundingClientRect();
    const px = ((event.clientX - box.left) / box.width) * width;
    // The bar under the pointer, else the nearest (narrow bars are hard to hit).
    let best = 0;
    let distance = Infinity;
    bars.forEach(([l, r], i) => {
      const d = px < sx(l) ? sx(l) - px : px > sx(r) ? px - sx(r) : 0;
      if (d < distance) [best, distance] = [i, d];
    });
    const [l, r, c] = bars[best];
    hovered?.classList.remove('tba-hover');
    hovered = rects[best];
    hovered.classList.add('tba-hover');
    const share = total > 0 ? ` (${fmt((100 * c) / total)}%)` : '';
    readout.textContent = `[${fmt(l)}, ${fmt(r)}${best === bars.length - 1 ? ']' : ')'}: ${fmt(c)}${share}`;
  });
  root.addEventListener('mouseleave', clear);
  return root;
}

export class HistogramPanel {
  constructor(app) {
    this.app = app;
    this.column = 'right';
    this.log = el('input', {type: 'checkbox', id: 'tba-histogram-log'});
    this.log.addEventListener('change', () => this.draw());
    this.caption = el('div', {class: 'tba-histogram-caption', id: 'tba-histogram-caption'});
    this.chart = el('div', {id: 'tba-histogram', class: 'tba-histogram'});
    this.root = el('section', {class: 'tba-panel'},
      el('h3', {text: 'Activation histogram'}),
      el('label', {class: 'tba-field'}, this.log, el('span', {text: 'log count'})),
      this.caption,
      this.chart);
    this.answers = new Map(); // JSON [run, layer, step] -> Promise<answer | {error}>
    this.answer = null;
  }

  runChanged() {
    this.answers.clear(); // Reload: read again
  }

  /**
   * The /histogram answer of a layer at a step, or {error}. Only exact answers
   * are kept: a step answered by an earlier kept one, or an error, may change
   * as TensorBoard loads more (the poll asks again, see refreshed()).
   */
  histogram(run, layer, step) {
    const key = JSON.stringify([run, layer, step]);
    let promise = this.answers.get(key);
    if (!promise) {
      promise = this.app.getJson('histogram', {run, layer, step, nearest: 1}).then(
        (answer) => {
          if (answer.step !== answer.requested_step) this.answers.delete(key);
          return answer;
        },
        (error) => {
          this.answers.delete(key);
          return {error};
        });
      this.answers.set(key, promise);
      while (this.answers.size > CACHE_LIMIT) this.answers.delete(this.answers.keys().next().value);
    }
    return promise;
  }

  async update(view) {
    const key = JSON.stringify([view.run, view.layer.layer, view.step]);
    if (key === this.key) return;
    this.key = key;
    this.asked = [view.run, view.layer.layer, view.step];
    await this.load(key);
  }

  async load(key) {
    const answer = await this.histogram(...this.asked);
    if (key !== this.key) return; // a newer step or layer was asked for meanwhile
    this.answer = answer;
    this.draw();
  }

  /** The poll: ask again when the shown answer was not the exact one (it may be there now). */
  refreshed() {
    if (this.answer && this.asked && (this.answer.error || this.answer.step !== this.answer.requested_step)) {
      this.load(this.key);
    }
  }

  draw() {
    const answer = this.answer;
    if (!answer) return;
    if (answer.error) {
      setChildren(this.caption);
      setChildren(this.chart, el('div', {class: 'tba-message', text: answer.error.message ?? String(answer.error)}));
      return;
    }
    if (answer.buckets === null) {
      setChildren(this.caption);
      setChildren(this.chart, el('div', {class: 'tba-message', text:
        'No histogram for this layer: the logger writes one per step when histogram_bins > 0 (30 by default).'}));
      return;
    }
    this.chart.dataset.step = String(answer.step);
    // TensorBoard kept fewer steps of the histogram than of the mosaics: say which one this is.
    const sampled = answer.step !== answer.requested_step
      ? ` (step ${answer.requested_step} was not kept: restart TensorBoard with ` +
        '--samples_per_plugin=images=100000,activations=100000,histograms=100000 to keep every step)'
      : '';
    setChildren(this.caption,
      `${answer.tag} at step ${answer.step}${sampled}: ${answer.count} values over the probes. ` +
        "TensorBoard's Histograms and Distributions tabs show it over steps.");
    setChildren(this.chart, answer.buckets.length
      ? histogramChart(answer.buckets, {log: this.log.checked, label: `${answer.tag} at step ${answer.step}`})
      : el('div', {class: 'tba-message', text: 'Empty histogram (no finite activations).'}));
  }
}
