// Microphone capture: downsamples the context rate to 16 kHz and posts 20 ms PCM16 frames.
// A box filter (the mean of the input samples behind each output sample) is the anti-alias
// filter: cheap, and enough for speech recognition, which looks below 8 kHz.

class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = (options && options.processorOptions) || {};
    this.targetRate = opts.targetRate || 16000;
    this.frameSamples = Math.round(this.targetRate * (opts.frameMs || 20) / 1000);
    this.ratio = sampleRate / this.targetRate;
    this.frame = new Int16Array(this.frameSamples);
    this.filled = 0;
    this.sum = 0;
    this.count = 0;
    this.phase = 0;
    this.enabled = true;
    this.port.onmessage = (event) => {
      if (event.data && event.data.type === 'enable') this.enabled = Boolean(event.data.on);
    };
  }

  emit(value) {
    const clamped = Math.max(-1, Math.min(1, value));
    this.frame[this.filled++] = clamped < 0 ? clamped * 0x8000 : clamped * 0x7fff;
    if (this.filled === this.frameSamples) {
      const buffer = this.frame.buffer;
      this.port.postMessage(buffer, [buffer]);
      this.frame = new Int16Array(this.frameSamples);
      this.filled = 0;
    }
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel || !this.enabled) return true;
    if (this.ratio <= 1) {
      // Context at or below the target rate (rare): pass samples through unchanged.
      for (let i = 0; i < channel.length; i++) this.emit(channel[i]);
      return true;
    }
    for (let i = 0; i < channel.length; i++) {
      this.sum += channel[i];
      this.count += 1;
      this.phase += 1;
      if (this.phase >= this.ratio) {
        this.phase -= this.ratio;
        this.emit(this.sum / this.count);
        this.sum = 0;
        this.count = 0;
      }
    }
    return true;
  }
}

registerProcessor('capture-processor', CaptureProcessor);
