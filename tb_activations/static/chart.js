// A hand-built SVG line chart for the per-layer drift and dead-fraction series.

const NS = 'http://www.w3.org/2000/svg';

function svg(tag, attrs = {}) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

function label(x, y, text, anchor = 'start') {
  const node = svg('text', {x, y, 'text-anchor': anchor, class: 'tba-chart-label'});
  node.textContent = text;
  return node;
}

/**
 * An SVG chart of `points` ([[step, value|null], ...]).
 * @param {Array} points
 * @param {{width?: number, height?: number, markStep?: number, onPick?: Function, unit?: boolean}} options
 *   `markStep` draws a vertical line at that step; clicking calls `onPick(step)`;
 *   `unit` keeps the y axis on [0, 1] (fractions, CKA).
 */
export function lineChart(points, {width = 280, height = 120, markStep, onPick, unit = false} = {}) {
  const pad = {left: 40, right: 8, top: 8, bottom: 18};
  const root = svg('svg', {width, height, viewBox: `0 0 ${width} ${height}`, class: 'tba-chart', role: 'img'});
  const finite = points.filter(([, v]) => v !== null && Number.isFinite(v));
  if (!finite.length) {
    root.append(label(width / 2, height / 2, 'no finite values', 'middle'));
    return root;
  }
  const steps = points.map(([s]) => s);
  const x0 = Math.min(...steps);
  const x1 = Math.max(...steps);
  let y0 = Math.min(...finite.map(([, v]) => v));
  let y1 = Math.max(...finite.map(([, v]) => v));
  if (unit) {
    // Fractions and similarities: keep the [0, 1] scale unless values leave it.
    y0 = Math.min(0, y0);
    y1 = Math.max(1, y1);
  }
  if (y0 === y1) {
    y0 -= 0.5;
    y1 += 0.5;
  }
  const sx = (s) => pad.left + (x1 === x0 ? 0.5 : (s - x0) / (x1 - x0)) * (width - pad.left - pad.right);
  const sy = (v) => pad.top + (1 - (v - y0) / (y1 - y0)) * (height - pad.top - pad.bottom);
  root.append(svg('rect', {x: pad.left, y: pad.top, width: width - pad.left - pad.right,
    height: height - pad.top - pad.bottom, class: 'tba-chart-frame'}));
  root.append(label(pad.left - 4, pad.top + 8, fmtAxis(y1), 'end'));
  root.append(label(pad.left - 4, height - pad.bottom, fmtAxis(y0), 'end'));
  root.append(label(pad.left, height - 4, String(x0)));
  root.append(label(width - pad.right, height - 4, String(x1), 'end'));
  // Break the line at non-finite values.
  let segment = [];
  const flush = () => {
    if (segment.length > 1) root.append(svg('polyline', {points: segment.join(' '), class: 'tba-chart-line'}));
    if (segment.length === 1) {
      const [x, y] = segment[0].split(',');
      root.append(svg('circle', {cx: x, cy: y, r: 2, class: 'tba-chart-dot'}));
    }
    segment = [];
  };
  for (const [s, v] of points) {
    if (v === null || !Number.isFinite(v)) flush();
    else segment.push(`${sx(s).toFixed(1)},${sy(v).toFixed(1)}`);
  }
  flush();
  if (markStep !== undefined && markStep >= x0 && markStep <= x1) {
    const x = sx(markStep).toFixed(1);
    root.append(svg('line', {x1: x, x2: x, y1: pad.top, y2: height - pad.bottom, class: 'tba-chart-mark'}));
  }
  if (onPick) {
    root.addEventListener('click', (event) => {
      const box = root.getBoundingClientRect();
      const px = ((event.clientX - box.left) / box.width) * width;
      let best = steps[0];
      for (const s of steps) if (Math.abs(sx(s) - px) < Math.abs(sx(best) - px)) best = s;
      onPick(best);
    });
  }
  return root;
}

function fmtAxis(v) {
  const abs = Math.abs(v);
  if (abs !== 0 && (abs >= 1e4 || abs < 1e-2)) return v.toExponential(1);
  return String(Number(v.toPrecision(3)));
}
