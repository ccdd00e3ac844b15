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
 * @param {{width?: number, height?: number, markStep?: number, onPick?: Function, unit?: boolean,
 *   label?: string}} options
 *   `markStep` draws a vertical line at that step; clicking calls `onPick(step)`;
 *   the y axis fits the data (CKA moving between 0.95 and 1 is not flat);
 *   `unit` keeps it within [0, 1] when the values are (fractions, CKA);
 *   `label` names the chart for screen readers. Hovering shows the nearest
 *   point's step and value.
 */
export function lineChart(points, {width = 280, height = 120, markStep, onPick, unit = false, label: name = ''} = {}) {
  const pad = {left: 44, right: 8, top: 14, bottom: 18};
  const root = svg('svg', {width, height, viewBox: `0 0 ${width} ${height}`, class: 'tba-chart', role: 'img'});
  const finite = points.filter(([, v]) => v !== null && Number.isFinite(v));
  const title = svg('title');
  title.textContent = name ? `${name}: ${finite.length} values over steps ${points[0]?.[0] ?? ''}` +
    `…${points[points.length - 1]?.[0] ?? ''}` : 'chart';
  root.append(title);
  if (name) root.setAttribute('aria-label', title.textContent);
  if (!finite.length) {
    root.append(label(width / 2, height / 2, 'no finite values', 'middle'));
    return root;
  }
  const steps = points.map(([s]) => s);
  const x0 = Math.min(...steps);
  const x1 = Math.max(...steps);
  let y0 = Math.min(...finite.map(([, v]) => v));
  let y1 = Math.max(...finite.map(([, v]) => v));
  // A constant series gets a band around its value (or [-1, 1] around 0).
  const margin = (y1 - y0) * 0.08 || Math.abs(y1) * 0.05 || 1;
  y0 -= margin;
  y1 += margin;
  if (unit) {
    // Fractions and similarities: the padding does not leave [0, 1] unless the data do.
    y0 = Math.max(y0, Math.min(0, ...finite.map(([, v]) => v)));
    y1 = Math.min(y1, Math.max(1, ...finite.map(([, v]) => v)));
  }
  const sx = (s) => pad.left + (x1 === x0 ? 0.5 : (s - x0) / (x1 - x0)) * (width - pad.left - pad.right);
  const sy = (v) => pad.top + (1 - (v - y0) / (y1 - y0)) * (height - pad.top - pad.bottom);
  root.append(svg('rect', {x: pad.left, y: pad.top, width: width - pad.left - pad.right,
    height: height - pad.top - pad.bottom, class: 'tba-chart-frame'}));
  root.append(label(pad.left - 4, pad.top + 8, fmtAxis(y1), 'end'));
  root.append(label(pad.left - 4, height - pad.bottom, fmtAxis(y0), 'end'));
  root.append(label(pad.left, height - 4, String(x0)));
  root.append(label((pad.left + width - pad.right) / 2, height - 4, 'step', 'middle'));
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
  // Hover: the nearest point's step and value.
  const dot = svg('circle', {r: 3, class: 'tba-chart-hover', visibility: 'hidden'});
  const readout = label(width - pad.right, 10, '', 'end');
  readout.classList.add('tba-chart-readout');
  root.append(dot, readout);
  const nearest = (event) => {
    const box = root.getBoundingClientRect();
    const px = ((event.clientX - box.left) / box.width) * width;
    let best = points[0];
    for (const p of points) if (Math.abs(sx(p[0]) - px) < Math.abs(sx(best[0]) - px)) best = p;
    return best;
  };
  root.addEventListener('mousemove', (event) => {
    const [s, v] = nearest(event);
    const ok = v !== null && Number.isFinite(v);
    readout.textContent = `step ${s}: ${ok ? fmtValue(v) : 'n/a'}`;
    dot.setAttribute('visibility', ok ? 'visible' : 'hidden');
    if (ok) {
      dot.setAttribute('cx', sx(s).toFixed(1));
      dot.setAttribute('cy', sy(v).toFixed(1));
    }
  });
  root.addEventListener('mouseleave', () => {
    readout.textContent = '';
    dot.setAttribute('visibility', 'hidden');
  });
  if (onPick) {
    root.addEventListener('click', (event) => onPick(nearest(event)[0]));
  }
  return root;
}

function fmtValue(v) {
  const abs = Math.abs(v);
  if (abs !== 0 && (abs >= 1e4 || abs < 1e-3)) return v.toExponential(3);
  return String(Number(v.toPrecision(5)));
}

function fmtAxis(v) {
  const abs = Math.abs(v);
  if (abs !== 0 && (abs >= 1e4 || abs < 1e-2)) return v.toExponential(1);
  return String(Number(v.toPrecision(3)));
}
