// The overview panel: one probe across every layer (the article's figure),
// or every probe of one layer, at the current step. Click a map to go there.

import {ApiError, imageUrl, loadImage} from './api.js';
import {el, setChildren, setOptions} from './dom.js';

const THUMB = 150; // px, longer side

export class OverviewPanel {
  constructor(app) {
    this.app = app;
    this.column = 'left';
    this.mode = el('select', {id: 'tba-overview-mode', 'aria-label': 'overview', onchange: () => {
      app.state.overview = this.mode.value;
      this.key = null;
      app.update();
    }});
    setOptions(this.mode, [['off', 'off'], ['layers', 'this probe, every layer'],
      ['probes', 'this layer, every probe']], 'off');
    this.grid = el('div', {id: 'tba-overview', class: 'tba-overview'});
    this.root = el('section', {class: 'tba-panel tba-overview-panel'},
      el('h3', {}, 'Overview ', this.mode), this.grid);
  }

  update(view) {
    const mode = this.app.state.overview ?? 'off';
    this.mode.value = mode;
    const key = JSON.stringify([mode, view.run, view.layer.layer, view.step, view.probe]);
    if (key === this.key) return;
    this.key = key;
    if (mode === 'off') {
      setChildren(this.grid);
      return;
    }
    const items = mode === 'layers'
      ? this.app.data.layers.map((layer) => ({
        caption: `${layer.index}. ${layer.layer}`, layer, probe: view.probe,
        current: layer.layer === view.layer.layer,
        pick: () => this.app.selectLayer(layer.layer),
      }))
      : view.layer.probes.map((name, probe) => ({
        caption: name, layer: view.layer, probe, current: probe === view.probe,
        pick: () => this.app.selectProbe(probe),
      }));
    const figures = items.map((item) => {
      const img = el('img', {class: 'tba-thumb', alt: `mosaic of ${item.caption}`});
      const button = el('button', {type: 'button', class: item.current ? 'tba-thumb-button tba-current' : 'tba-thumb-button',
        title: item.caption, 'aria-label': `show ${item.caption}`, onclick: item.pick}, img);
      const message = el('div', {class: 'tba-message', hidden: true});
      const figure = el('figure', {class: 'tba-figure tba-overview-item', dataset: {layer: item.layer.layer, probe: String(item.probe)}},
        el('figcaption', {class: 'tba-caption', text: item.caption}), button, message);
      return {item, img, button, message, figure};
    });
    setChildren(this.grid, ...figures.map((f) => f.figure));
    for (const {item, img, button, message, figure} of figures) {
      const tag = item.layer.views.mosaic;
      if (!tag) {
        button.hidden = true;
        message.hidden = false;
        message.textContent = 'no mosaic logged';
        continue;
      }
      loadImage(imageUrl(view.run, tag, view.step, Math.min(item.probe, item.layer.probes.length - 1))).then((loaded) => {
        if (!view.isCurrent() && this.key !== key) return;
        img.src = loaded.src;
        const scale = THUMB / Math.max(loaded.naturalWidth, loaded.naturalHeight);
        img.style.width = `${Math.max(1, Math.round(loaded.naturalWidth * scale))}px`;
        img.style.height = `${Math.max(1, Math.round(loaded.naturalHeight * scale))}px`;
        figure.classList.add('tba-loaded');
      }, (err) => {
        button.hidden = true;
        message.hidden = false;
        message.textContent = err instanceof ApiError && err.status === 404 ? `not kept at step ${view.step}` : String(err.message ?? err);
      });
    }
  }
}
