// Microphone capture: downsamples the context rate to 16 kHz and posts 20 ms PCM16 frames.
// A box filter (the mean of the input samples behind each output sample) is the anti-alias
// filter: cheap, and enough for speech recognition, which looks below 8 kHz.
// With `reference` on, a second input carries what the page is playing; each frame is then two
// channels interleaved (microphone, played), sample-aligned by the audio clock: the server's echo
// canceller gets the exact reference (docs/protocol.md, hello `echo_reference`).

class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = (options && options.processorOptions) || {};
    this.targetRate = opts.targetRate || 16000;
    this.frameSamples = Math.round(this.targetRate * (opts.frameMs || 20) / 1000);
    this.ratio = sampleRate / this.targetRate;
    this.channels = opts.reference ? 2 : 1;
    this.frame = new Int16Array(this.frameSamples * this.channels);
    this.filled = 0;
    this.sum = 0;
    this.refSum = 0;
    this.count = 0;
    this.phase = 0;
    this.enabled = true;
    this.port.onmessage = (event) => {
      if (event.data && event.data.type === 'enable') this.enabled = Boolean(event.data.on);
    };
  }

  pcm(value) {
    const clamped = Math.max(-1, Math.min(1, value));
    return clamped < 0 ? clamped * 0x8000 : clamped * 0x7fff;
  }

  emit(value, played) {
    this.frame[this.filled++] = this.pcm(value);
    if (this.channels === 2) this.frame[this.filled++] = this.pcm(played);
    if (this.filled === this.frame.length) {
      const buffer = this.frame.buffer;
      this.port.postMessage(buffer, [buffer]);
      this.frame = new Int16Array(this.frameSamples * this.channels);
      this.filled = 0;
    }
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel || !this.enabled) return true;
    // Nothing playing: the input has no channels, which is silence.
    const played = (this.channels === 2 && inputs[1] && inputs[1][0]) || null;
    if (this.ratio <= 1) {
      // Context at or below the target rate (rare): pass samples through unchanged.
      for (let i = 0; i < channel.length; i++) this.emit(channel[i], played ? played[i] : 0);
      return true;
    }
    for (let i = 0; i < channel.length; i++) {
      this.sum += channel[i];
      if (played) this.refSum += played[i];
      this.count += 1;
      this.phase += 1;
      if (this.phase >= this.ratio) {
        this.phase -= this.ratio;
        this.emit(this.sum / this.count, this.refSum / this.count);
        this.sum = 0;
        this.refSum = 0;
        this.count = 0;
      }
    }
    return true;
  }
}

registerProcessor('capture-processor', CaptureProcessor);
