// Agent speech playback with a small jitter buffer, turn-aware flush, pause and resume.
//
// Frames arrive as PCM16 at the server's rate and are resampled here by linear interpolation
// with a read position that runs across chunk boundaries, so chunks join without clicks.
// A flush drops every queued frame of the flushed turn (and older) at once, and any frame that
// arrives later with a turn id not newer than the flushed one: correctness never depends on
// timing. Played milliseconds per turn are reported about every 100 ms and when a turn's audio
// runs out, counted in source samples actually rendered.

const PREBUFFER_MS = 60;      // start a turn once this much is queued...
const MAX_PREBUFFER_WAIT_MS = 120;  // ...or once the first frame has waited this long
const REPORT_EVERY_MS = 100;

class PlaybackProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.setRate(24000);
    this.reset();
    this.port.onmessage = (event) => this.onMessage(event.data);
  }

  setRate(rate) {
    this.inRate = rate;
    this.step = rate / sampleRate;
  }

  reset() {
    this.queue = [];           // {turn, data: Float32Array}
    this.pos = 0;              // fractional read position in queue[0]
    this.buffered = 0;         // source samples queued
    this.flushedTurn = 0;
    this.paused = new Set();
    this.primed = false;
    this.waited = 0;           // render quanta waited while priming
    this.consumed = new Map(); // turn -> source samples fully rendered
    this.reported = new Map(); // turn -> last ms reported
    this.lastReportAt = 0;
    this.level = 0;
  }

  onMessage(m) {
    if (!m) return;
    switch (m.type) {
      case 'config':
        this.setRate(m.rate);
        break;
      case 'reset':
        this.reset();
        break;
      case 'audio': {
        if (m.turn <= this.flushedTurn) return;  // late frame of a flushed turn
        const pcm = new Int16Array(m.pcm);
        const data = new Float32Array(pcm.length);
        for (let i = 0; i < pcm.length; i++) data[i] = pcm[i] / 0x8000;
        this.queue.push({ turn: m.turn, data });
        this.buffered += data.length;
        break;
      }
      case 'flush': {
        if (m.turn > this.flushedTurn) this.flushedTurn = m.turn;
        const head = this.queue[0];
        if (head && head.turn <= this.flushedTurn) this.pos = 0;
        this.queue = this.queue.filter((c) => c.turn > this.flushedTurn);
        this.buffered = this.queue.reduce((n, c) => n + c.data.length, 0);
        if (this.queue.length === 0) this.primed = false;
        break;
      }
      case 'pause':
        this.paused.add(m.turn);
        this.report(m.turn);
        break;
      case 'resume':
        this.paused.delete(m.turn);
        break;
    }
  }

  playedMs(turn) {
    let samples = this.consumed.get(turn) || 0;
    const head = this.queue[0];
    if (head && head.turn === turn) samples += Math.floor(this.pos);
    return Math.round(samples * 1000 / this.inRate);
  }

  report(turn) {
    if (turn === undefined || turn <= this.flushedTurn || !this.consumed.has(turn)) return;
    const ms = this.playedMs(turn);
    if (this.reported.get(turn) === ms) return;
    this.reported.set(turn, ms);
    this.port.postMessage({ type: 'played', turn, ms });
  }

  finishChunk() {
    const head = this.queue.shift();
    this.pos -= head.data.length;
    this.buffered -= head.data.length;
    this.consumed.set(head.turn, (this.consumed.get(head.turn) || 0) + head.data.length);
    const next = this.queue[0];
    if (!next || next.turn !== head.turn) {
      this.pos = 0;
      this.report(head.turn);  // the end of this turn's audio (for now)
    }
  }

  process(inputs, outputs) {
    const out = outputs[0];
    const mono = out[0];
    let written = 0;
    if (!this.primed && this.queue.length > 0) {
      this.waited += 1;
      const waitedMs = this.waited * mono.length * 1000 / sampleRate;
      const bufferedMs = this.buffered * 1000 / this.inRate;
      if (bufferedMs >= PREBUFFER_MS || waitedMs >= MAX_PREBUFFER_WAIT_MS) this.primed = true;
    }
    if (this.primed) {
      while (written < mono.length) {
        const head = this.queue[0];
        if (!head) {
          this.primed = false;  // underrun: prime again before the next frames play
          this.waited = 0;
          break;
        }
        if (this.paused.has(head.turn)) break;
        if (!this.consumed.has(head.turn)) {
          this.consumed.set(head.turn, 0);
          this.report(head.turn);  // played 0: the moment a turn starts (the server's echo reference)
        }
        const index = Math.floor(this.pos);
        const frac = this.pos - index;
        const a = head.data[index];
        let b = a;
        if (index + 1 < head.data.length) b = head.data[index + 1];
        else if (this.queue[1] && this.queue[1].turn === head.turn) b = this.queue[1].data[0];
        mono[written++] = a + (b - a) * frac;
        this.pos += this.step;
        while (this.queue.length && this.pos >= this.queue[0].data.length) this.finishChunk();
      }
    }
    for (let i = written; i < mono.length; i++) mono[i] = 0;
    for (let c = 1; c < out.length; c++) out[c].set(mono);

    if (currentTime - this.lastReportAt >= REPORT_EVERY_MS / 1000) {
      this.lastReportAt = currentTime;
      const head = this.queue[0];
      if (head && this.primed) this.report(head.turn);
    }
    return true;
  }
}

registerProcessor('playback-processor', PlaybackProcessor);
