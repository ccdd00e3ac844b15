// The step bar: play/pause, the step slider and its label.

import {el} from './dom.js';

/** Play button, slider and "step S (i of n)" label; calls back into the dashboard `app`. */
export class StepBar {
  constructor(app) {
    this.playButton = el('button', {type: 'button', id: 'tba-play', text: 'Play', onclick: () => app.togglePlay()});
    this.slider = el('input', {type: 'range', id: 'tba-step', min: 0, max: 0, step: 1, value: 0,
      'aria-label': 'step'});
    this.slider.addEventListener('input', () => app.setStepIndex(Number(this.slider.value)));
    this.label = el('span', {id: 'tba-step-label', class: 'tba-step-label'});
    this.root = el('div', {class: 'tba-stepbar'}, this.playButton, this.slider, this.label);
  }

  /** The slider spans the `count` kept steps of the layer. */
  setCount(count) {
    this.slider.max = String(Math.max(0, count - 1));
  }

  setPlaying(playing) {
    this.playButton.textContent = playing ? 'Pause' : 'Play';
  }

  /** Shows the view's step (see Dashboard.update), or that the layer kept none. */
  update(view) {
    if (view.step === undefined) {
      this.label.textContent = 'no mosaic kept for this layer';
      return;
    }
    this.slider.value = String(view.stepIndex);
    this.label.textContent = `step ${view.step} (${view.stepIndex + 1} of ${view.layer.steps.length})`;
  }
}
