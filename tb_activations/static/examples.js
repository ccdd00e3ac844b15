// Top-activating examples (logger.log_examples, the callback's examples_pool):
// the opened channel's k pool images, cropped at its receptive field, with
// their values, names and labels and what is new since the previous
// example-step, its optimised image where there is one; and the "Channels"
// view, every channel of the layer with its examples at a glance.
//
// Data: GET examples?run&layer (plugin_data.layer_examples); crops are cut
// from the pages of the L/examples image tag, placed by `grid`.

import {ApiError, imageUrl, loadImage} from './api.js';
import {el, fmt, setChildren} from './dom.js';

/** The rectangle of crop `j` of `channel` in its page: {page, x, y, w, h} in natural pixels. */
export function exampleRect(grid, channel, j, naturalW, naturalH) {
  const fx = naturalW / grid.width;
  const fy = naturalH / grid.height;
  const row = channel % grid.rows;
  return {
    page: Math.floor(channel / grid.rows),
    x: (grid.gutter_w + j * (grid.cell + grid.sep)) * fx,
    y: row * (grid.cell + grid.label_h + grid.sep) * fy,
    w: grid.cell * fx,
    h: grid.cell * fy,
  };
}

/** The example-step shown at dashboard step `step`: the last one at or before it, else the first. */
export function exampleStepIndex(steps, step) {
  let found = -1;
  steps.forEach((s, i) => {
    if (s.step <= step) found = i;
  });
  return found >= 0 ? found : (steps.length ? 0 : -1);
}

/** Cache of /examples answers per run and layer (reloaded on refresh). */
class ExamplesSource {
  constructor(app) {
    this.app = app;
    this.cache = new Map();
  }

  get(run, layer) {
    const key = JSON.stringify([run, layer]);
    if (!this.cache.has(key)) {
      const promise = this.app.getJson('examples', {run, layer}).catch((err) => ({error: err}));
      this.cache.set(key, promise);
    }
    return this.cache.get(key);
  }

  clear() {
    this.cache.clear();
  }
}

function sourceOf(app) {
  if (!app.examplesSource) app.examplesSource = new ExamplesSource(app);
  return app.examplesSource;
}

function message(err) {
  return err instanceof ApiError ? err.message : String(err);
}

export class ExamplesPanel {
  constructor(app) {
    this.app = app;
    this.column = 'left';
    this.title = el('h3', {id: 'tba-examples-title', text: 'Top examples'});
    this.summary = el('div', {id: 'tba-examples-summary', class: 'tba-examples-summary'});
    this.grid = el('div', {id: 'tba-examples', class: 'tba-examples'});
    this.visCaption = el('figcaption', {class: 'tba-caption'});
    this.visCanvas = el('canvas', {id: 'tba-feature-vis', class: 'tba-feature-vis', width: 1, height: 1});
    this.vis = el('figure', {class: 'tba-figure', hidden: true}, this.visCaption, this.visCanvas);
    this.root = el('section', {id: 'tba-examples-panel', class: 'tba-panel', hidden: true},
      this.title, this.summary, this.grid, this.vis);
  }

  runChanged() {
    sourceOf(this.app).clear();
  }

  refreshed() {
    sourceOf(this.app).clear();
  }

  async update(view) {
    const {run, layer, step, channel} = view;
    if (channel === null) {
      this.root.hidden = true;
      return;
    }
    const data = await sourceOf(this.app).get(run, layer.layer);
    if (!view.isCurrent()) return;
    if (data.error || !data.steps.length) {
      // No example pool was logged for this layer: say nothing rather than an empty panel.
      this.root.hidden = true;
      return;
    }
    this.root.hidden = false;
    const index = exampleStepIndex(data.steps, step);
    const current = data.steps[index];
    const slots = current.channels[channel] ?? [];
    const before = current.step > step ? ` (the first, after step ${step})` : '';
    this.title.textContent = `Top ${data.k} examples of channel ${channel} · example-step ${current.step}${before}`;
    const newCount = slots.filter((s) => s[4] === 1).length;
    const previous = index > 0 ? data.steps[index - 1].step : null;
    const field = data.field;
    const fieldText = field ? `receptive field ${field.size.join('x')} px, stride ${field.stride.join('x')}` : '';
    this.summary.textContent = [
      previous === null ? 'first example-step' : `${newCount} of ${slots.length} new since example-step ${previous}`,
      current.pool_size ? `pool of ${current.pool_size} images` : null,
      fieldText,
    ].filter(Boolean).join(' · ');
    const figures = slots.map((slot, j) => {
      const [value, image, y, x, isNew] = slot;
      const canvas = el('canvas', {class: 'tba-example-canvas', width: 1, height: 1});
      const name = image >= 0 ? (current.names[String(image)] ?? `image ${image}`) : 'empty';
      const label = image >= 0 ? current.labels[String(image)] : undefined;
      const caption = el('figcaption', {class: 'tba-caption'},
        el('span', {class: 'tba-example-value', text: fmt(value)}),
        isNew === 1 ? el('span', {class: 'tba-new', text: 'new'}) : null,
        el('br'), name, label !== undefined ? ` · ${label}` : '');
      const figure = el('figure', {class: 'tba-example', dataset: {rank: String(j), image: String(image)},
        title: `${name}${label !== undefined ? ` (${label})` : ''}: ${fmt(value)} at (${y}, ${x})`},
      canvas, caption);
      return {figure, canvas, j, image};
    });
    setChildren(this.grid, ...figures.map((f) => f.figure));
    const page = Math.floor(channel / data.grid.rows);
    try {
      const img = await loadImage(imageUrl(run, data.views.examples, current.step, page));
      if (!view.isCurrent()) return;
      for (const {canvas, j, image} of figures) {
        if (image < 0) continue;
        const r = exampleRect(data.grid, channel, j, img.naturalWidth, img.naturalHeight);
        canvas.width = Math.round(r.w);
        canvas.height = Math.round(r.h);
        canvas.getContext('2d').drawImage(img, r.x, r.y, r.w, r.h, 0, 0, canvas.width, canvas.height);
      }
    } catch (err) {
      this.summary.textContent += ` · crops unavailable: ${message(err)}`;
    }
    await this.drawFeatureVis(view, data);
  }

  /** The channel's optimised image at the last feature-vis step at or before `step`, if any. */
  async drawFeatureVis({run, step, channel, isCurrent}, data) {
    const candidates = data.feature_vis.filter((f) => f.channels.includes(channel));
    const chosen = candidates.filter((f) => f.step <= step).pop() ?? candidates[0];
    if (!chosen) {
      this.vis.hidden = true;
      return;
    }
    const n = chosen.channels.indexOf(channel);
    try {
      const img = await loadImage(imageUrl(run, data.views.feature_vis, chosen.step, n));
      if (!isCurrent()) return;
      this.visCanvas.width = img.naturalWidth;
      this.visCanvas.height = img.naturalHeight;
      this.visCanvas.getContext('2d').drawImage(img, 0, 0);
      this.visCaption.textContent = `Optimised image (step ${chosen.step}, mean activation ${fmt(chosen.objective[n])})`;
      this.vis.hidden = false;
    } catch (err) {
      this.vis.hidden = true;
    }
  }
}

export class ChannelsPanel {
  constructor(app) {
    this.app = app;
    this.column = 'right';
    this.page = 0;
    this.caption = el('div', {id: 'tba-channels-caption', class: 'tba-caption'});
    this.prev = el('button', {type: 'button', text: '‹ page', onclick: () => this.turn(-1)});
    this.next = el('button', {type: 'button', text: 'page ›', onclick: () => this.turn(1)});
    this.img = el('img', {id: 'tba-channels-page', class: 'tba-channels-page', alt: 'channels and their top examples'});
    this.img.addEventListener('click', (e) => this.pick(e));
    this.msg = el('div', {class: 'tba-message', hidden: true});
    this.root = el('section', {id: 'tba-channels', class: 'tba-panel', hidden: true},
      el('h3', {text: 'Channels'}), this.caption,
      el('div', {class: 'tba-pagebar'}, this.prev, this.next), this.img, this.msg);
  }

  runChanged() {
    this.page = 0;
  }

  layerChanged() {
    this.page = 0;
  }

  turn(delta) {
    if (!this.data) return;
    this.page = Math.max(0, Math.min(this.data.grid.pages - 1, this.page + delta));
    this.app.update();
  }

  async update(view) {
    const {run, layer, step, channel} = view;
    const data = await sourceOf(this.app).get(run, layer.layer);
    if (!view.isCurrent()) return;
    if (data.error || !data.steps.length) {
      this.root.hidden = true;
      this.data = null;
      return;
    }
    this.root.hidden = false;
    this.data = data;
    const grid = data.grid;
    if (channel !== null && this.lastChannel !== channel) this.page = Math.floor(channel / grid.rows);
    this.lastChannel = channel;
    this.page = Math.max(0, Math.min(grid.pages - 1, this.page));
    const current = data.steps[exampleStepIndex(data.steps, step)];
    this.step = current.step;
    const first = this.page * grid.rows;
    const last = Math.min(grid.channels, first + grid.rows) - 1;
    this.caption.textContent = `Every channel of ${layer.layer} with its top ${data.k} examples at ` +
      `example-step ${current.step}: channels ${first}-${last} of ${grid.channels} ` +
      `(page ${this.page + 1} of ${grid.pages}). Click a row to open its channel.`;
    this.prev.disabled = this.page === 0;
    this.next.disabled = this.page >= grid.pages - 1;
    try {
      const img = await loadImage(imageUrl(run, data.views.examples, current.step, this.page));
      if (!view.isCurrent()) return;
      this.img.src = img.src;
      this.img.hidden = false;
      this.msg.hidden = true;
    } catch (err) {
      this.img.hidden = true;
      this.msg.hidden = false;
      this.msg.textContent = message(err);
    }
  }

  pick(event) {
    const grid = this.data?.grid;
    if (!grid) return;
    const box = this.img.getBoundingClientRect();
    const y = ((event.clientY - box.top) / box.height) * grid.height;
    const row = Math.floor(y / (grid.cell + grid.label_h + grid.sep));
    const channel = this.page * grid.rows + row;
    if (row >= 0 && row < grid.rows && channel < grid.channels) this.app.pickChannel(channel);
  }
}
