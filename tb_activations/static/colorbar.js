// The colour bar under the mosaic, and the per-probe stretch of a mosaic.
//
// Mosaics are palette PNGs: palette index i < levels is level i of the
// step's colour scale [lo, hi] (the logger writes it per step, L/color_scale;
// /stats returns it as `scale`), then NaN, then background. GET /palette
// gives the palette; the bar is drawn from it, so it is the logger's colours.

import {el, fmt} from './dom.js';

export class ColorBar {
  constructor() {
    this.canvas = el('canvas', {class: 'tba-colorbar-canvas', width: 254, height: 1, 'aria-hidden': 'true'});
    this.lo = el('span', {class: 'tba-colorbar-lo'});
    this.hi = el('span', {class: 'tba-colorbar-hi'});
    this.note = el('span', {class: 'tba-note'});
    this.root = el('div', {id: 'tba-colorbar', class: 'tba-colorbar', role: 'img', hidden: true},
      this.lo, this.canvas, this.hi, this.note);
  }

  /** Draws the gradient of `palette` (a /palette answer). */
  setPalette(palette) {
    this.palette = palette;
    const n = palette.levels;
    this.canvas.width = n;
    const g = this.canvas.getContext('2d');
    const data = g.createImageData(n, 1);
    for (let i = 0; i < n; i++) data.data.set([...palette.colors[i], 255], 4 * i);
    g.putImageData(data, 0, 0);
  }

  /**
   * Labels the bar with `scale` ({lo, hi}: numbers, or arrays per channel) for
   * `channel` (per-channel scales), stretched to levels [l0, l1] when given.
   */
  show(scale, {channel = null, stretch = null} = {}) {
    if (!scale || !this.palette) {
      this.root.hidden = true;
      return;
    }
    let {lo, hi} = scale;
    let note = '';
    if (Array.isArray(lo)) {
      if (channel === null || channel >= lo.length) {
        this.root.hidden = false;
        this.lo.textContent = '';
        this.hi.textContent = '';
        this.note.textContent = 'one scale per channel: hover or open a channel for its range';
        this.root.setAttribute('aria-label', this.note.textContent);
        return;
      }
      [lo, hi] = [lo[channel], hi[channel]];
      note = `channel ${channel}'s own scale`;
    }
    if (stretch && lo !== null && hi !== null) {
      const span = hi - lo;
      const n = this.palette.levels - 1;
      [lo, hi] = [lo + (span * stretch[0]) / n, lo + (span * stretch[1]) / n];
      note = note ? `${note}, stretched to this probe` : 'stretched to this probe';
    }
    this.root.hidden = false;
    this.lo.textContent = fmt(lo);
    this.hi.textContent = fmt(hi);
    this.note.textContent = note;
    this.root.setAttribute('aria-label', `colour scale from ${fmt(lo)} to ${fmt(hi)}${note ? ` (${note})` : ''}`);
  }
}

const stretched = new Map(); // image src -> Promise<{src, range} | null>
const STRETCH_CACHE = 200;

/**
 * The mosaic `img` with its levels stretched to the probe's own range:
 * resolves to {src (object URL), range: [l0, l1]}, or null when the image does
 * not use the palette (then it is shown as stored).
 */
export function stretchToProbe(img, palette) {
  const key = img.src;
  if (!stretched.has(key)) {
    stretched.set(key, stretch(img, palette));
    if (stretched.size > STRETCH_CACHE) {
      // Forget the oldest stretched mosaic and free its object URL.
      const [oldest, promise] = stretched.entries().next().value;
      stretched.delete(oldest);
      promise.then((s) => s && URL.revokeObjectURL(s.src), () => {});
    }
  }
  return stretched.get(key);
}

async function stretch(img, palette) {
  const n = palette.levels;
  const index = new Map();
  for (let i = 0; i < n; i++) {
    const [r, g, b] = palette.colors[i];
    const k = (r << 16) | (g << 8) | b;
    if (!index.has(k)) index.set(k, i);
  }
  const canvas = document.createElement('canvas');
  canvas.width = img.naturalWidth;
  canvas.height = img.naturalHeight;
  const g = canvas.getContext('2d', {willReadFrequently: true});
  g.drawImage(img, 0, 0);
  const data = g.getImageData(0, 0, canvas.width, canvas.height);
  const px = data.data;
  const levels = new Int16Array(px.length / 4).fill(-1);
  let l0 = n;
  let l1 = -1;
  for (let p = 0, i = 0; p < px.length; p += 4, i++) {
    const level = index.get((px[p] << 16) | (px[p + 1] << 8) | px[p + 2]);
    if (level === undefined) continue; // NaN, background, or not the palette's colour
    levels[i] = level;
    if (level < l0) l0 = level;
    if (level > l1) l1 = level;
  }
  if (l1 < 0) return null;
  const span = Math.max(1, l1 - l0);
  for (let p = 0, i = 0; p < px.length; p += 4, i++) {
    if (levels[i] < 0) continue;
    const c = palette.colors[Math.round(((levels[i] - l0) * (n - 1)) / span)];
    px[p] = c[0];
    px[p + 1] = c[1];
    px[p + 2] = c[2];
  }
  g.putImageData(data, 0, 0);
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, 'image/png'));
  return {src: URL.createObjectURL(blob), range: [l0, l1]};
}
