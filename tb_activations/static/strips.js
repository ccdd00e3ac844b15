// The "Strongest channels and overlay" panel: the top-k strip (click a channel
// to open it) and the overlay on the probe.

import {ApiError, imageUrl, loadImage} from './api.js';
import {el} from './dom.js';
import {topChannels} from './geometry.js';

/** Shows stored image `src` in `img`, or `missing` (no src) / the error in `message`. */
export async function showStrip(img, message, src, missing) {
  if (!src) {
    img.hidden = true;
    message.hidden = false;
    message.textContent = missing;
    return;
  }
  try {
    const loaded = await loadImage(src);
    img.src = loaded.src;
    const scale = Math.max(1, Math.min(8, Math.floor(360 / loaded.naturalWidth)));
    img.style.width = `${loaded.naturalWidth * scale}px`;
    img.hidden = false;
    message.hidden = true;
  } catch (err) {
    img.hidden = true;
    message.hidden = false;
    message.textContent = err instanceof ApiError ? err.message : String(err);
  }
}

export class StripsPanel {
  constructor(app) {
    this.app = app;
    this.column = 'right';
    this.topkImg = el('img', {id: 'tba-topk', class: 'tba-strip', alt: 'top-k channels'});
    this.topkImg.addEventListener('click', (e) => this.pickTopk(e));
    this.topkCaption = el('figcaption', {id: 'tba-topk-caption', class: 'tba-caption'});
    this.topkMsg = el('div', {class: 'tba-message', hidden: true});
    this.overlayImg = el('img', {id: 'tba-overlay', class: 'tba-strip', alt: 'overlay'});
    this.overlayMsg = el('div', {class: 'tba-message', hidden: true});
    this.root = el('section', {class: 'tba-panel'},
      el('h3', {text: 'Strongest channels and overlay'}),
      el('figure', {class: 'tba-figure'}, this.topkCaption, this.topkImg, this.topkMsg),
      el('figure', {class: 'tba-figure'},
        el('figcaption', {class: 'tba-caption', text: 'Overlay on the probe: strongest channel | mean over channels'}),
        this.overlayImg, this.overlayMsg));
  }

  async update(view) {
    const {run, layer, step, probe} = view;
    showStrip(this.topkImg, this.topkMsg, layer.views.topk && imageUrl(run, layer.views.topk, step, probe),
      'The top-k view was not logged for this layer.');
    showStrip(this.overlayImg, this.overlayMsg,
      layer.views.overlay && imageUrl(run, layer.views.overlay, step, probe),
      'The overlay view was not logged for this layer (it needs a spatial output).');
    const stats = await view.stats;
    if (!view.isCurrent()) return;
    this.stats = stats;
    this.layer = layer;
    this.probe = probe;
    this.updateCaption(layer, stats, probe);
  }

  pickTopk(event) {
    const {layer, stats, probe} = this;
    if (!layer || !stats || stats.error) return;
    const box = this.topkImg.getBoundingClientRect();
    const k = Math.min(layer.top_k, stats.channels);
    const i = Math.floor(((event.clientX - box.left) / box.width) * k);
    const field = Math.max(0, stats.fields.indexOf(layer.rank_by));
    const channels = topChannels(stats.stats[Math.min(probe, stats.stats.length - 1)], field, k);
    if (channels[i] !== undefined) this.app.pickChannel(channels[i]);
  }

  updateCaption(layer, stats, probe) {
    if (stats.error) {
      this.topkCaption.textContent = `Top ${layer.top_k} channels by ${layer.rank_by}`;
      return;
    }
    const field = Math.max(0, stats.fields.indexOf(layer.rank_by));
    const channels = topChannels(stats.stats[Math.min(probe, stats.stats.length - 1)], field, layer.top_k);
    this.topkCaption.textContent = `Top ${layer.top_k} channels by ${layer.rank_by}: ${channels.join(', ')} (click one to open it)`;
  }
}
