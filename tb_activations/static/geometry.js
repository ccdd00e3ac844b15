// Grid geometry: mosaic pixels <-> channel index (see metadata.create_layer_content),
// and the small pure helpers the panels share.

/** Size in px of a tiling of `cols` x `rows` cells. */
export function gridSize(grid) {
  return {
    width: grid.cols * (grid.cell_w + grid.sep) - grid.sep,
    height: grid.rows * (grid.cell_h + grid.sep) - grid.sep,
  };
}

/**
 * The channel under natural-pixel position (x, y) of a mosaic `naturalW` x `naturalH`,
 * or null on a separator, past the last channel or outside.
 */
export function channelAt(grid, channels, x, y, naturalW, naturalH) {
  const size = gridSize(grid);
  const gx = (x * size.width) / naturalW; // tolerate a rescaled PNG
  const gy = (y * size.height) / naturalH;
  if (gx < 0 || gy < 0 || gx >= size.width || gy >= size.height) return null;
  const col = Math.floor(gx / (grid.cell_w + grid.sep));
  const row = Math.floor(gy / (grid.cell_h + grid.sep));
  if (gx - col * (grid.cell_w + grid.sep) >= grid.cell_w) return null;
  if (gy - row * (grid.cell_h + grid.sep) >= grid.cell_h) return null;
  const channel = row * grid.cols + col;
  return col < grid.cols && channel < channels ? channel : null;
}

/** The cell of `channel` in natural pixels of a mosaic `naturalW` x `naturalH`. */
export function cellRect(grid, channel, naturalW, naturalH) {
  const size = gridSize(grid);
  const fx = naturalW / size.width;
  const fy = naturalH / size.height;
  const col = channel % grid.cols;
  const row = Math.floor(channel / grid.cols);
  return {
    x: col * (grid.cell_w + grid.sep) * fx,
    y: row * (grid.cell_h + grid.sep) * fy,
    w: grid.cell_w * fx,
    h: grid.cell_h * fy,
  };
}

/** Channels of the top-k strip, as the logger ranks them (stable, largest first, NaN last). */
export function topChannels(statsForProbe, fieldIndex, k) {
  const keyed = statsForProbe.map((row, c) => [row[fieldIndex], c]);
  keyed.sort((a, b) => {
    const va = a[0] === null || !Number.isFinite(a[0]) ? -Infinity : a[0];
    const vb = b[0] === null || !Number.isFinite(b[0]) ? -Infinity : b[0];
    return vb - va || a[1] - b[1];
  });
  return keyed.slice(0, k).map(([, c]) => c);
}

/** Draws region `rect` of `img` into `canvas` at 1:1, without smoothing. */
export function cropToCanvas(canvas, img, rect) {
  canvas.width = Math.max(1, Math.round(rect.w));
  canvas.height = Math.max(1, Math.round(rect.h));
  const g = canvas.getContext('2d');
  g.imageSmoothingEnabled = false;
  g.clearRect(0, 0, canvas.width, canvas.height);
  g.drawImage(img, rect.x, rect.y, rect.w, rect.h, 0, 0, canvas.width, canvas.height);
}

/** Index of the step of `steps` closest to `step` (the last one when `step` is undefined). */
export function nearestIndex(steps, step) {
  if (!steps.length || step === undefined) return Math.max(0, steps.length - 1);
  let best = 0;
  for (let i = 0; i < steps.length; i++) {
    if (Math.abs(steps[i] - step) < Math.abs(steps[best] - step)) best = i;
  }
  return best;
}
