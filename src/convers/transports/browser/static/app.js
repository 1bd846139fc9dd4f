// The convers page: one WebSocket conversation (docs/protocol.md), mic capture and agent playback
// through AudioWorklets, a live transcript, typed input, and the memory panel.

const CAPTURE_RATE = 16000;
const FRAME_MS = 20;
const RECONNECT_FIRST_MS = 500;
const RECONNECT_MAX_MS = 15000;
const MAX_TRANSCRIPT_ENTRIES = 80;
const MEMORY_PAGE = 30;
const NO_LLM_CODES = new Set(['llm_unavailable', 'no_llm']);

const $ = (id) => document.getElementById(id);
const ui = {
  conn: $('conn'), recording: $('recording'), banner: $('banner'), bannerText: $('banner-text'), bannerClose: $('banner-close'),
  orb: $('orb'), canvas: $('orb-canvas'), status: $('status'), metrics: $('metrics'),
  transcript: $('transcript'), form: $('text-form'), input: $('text-input'),
  memory: $('memory'), memoryOpen: $('memory-open'), memoryClose: $('memory-close'),
  memorySearch: $('memory-search'), memoryQuery: $('memory-query'), memoryList: $('memory-list'),
  memoryCount: $('memory-count'), memoryMore: $('memory-more'), memoryWipe: $('memory-wipe'),
  serverEcho: $('server-echo'),
};

// Echo cancelled by the server instead of the browser (docs/protocol.md, hello `aec`): for speakers
// whose browser cancellation fails. Kept on this device; the browser's own canceller is then off,
// since two cancellers in a row fight each other.
const SERVER_ECHO_KEY = 'convers.serverEcho';
function serverEcho() {
  try { return localStorage.getItem(SERVER_ECHO_KEY) === '1'; } catch { return false; }
}
if (ui.serverEcho) {
  ui.serverEcho.checked = serverEcho();
  ui.serverEcho.addEventListener('change', () => {
    try { localStorage.setItem(SERVER_ECHO_KEY, ui.serverEcho.checked ? '1' : '0'); } catch { /* private mode */ }
    location.reload();  // the microphone is opened anew with the browser's canceller on or off
  });
}

// This tab's id for the server's learned echo canceller (hello `echo_room`): the server keeps the
// canceller a few minutes after a connection ends, so a reconnection does not learn the room again.
// Per tab (sessionStorage): a reload keeps it, a new tab gets its own. Random, and a key to nothing else.
const ECHO_ROOM_KEY = 'convers.echoRoom';
let echoRoomId = null;
function echoRoom() {
  if (echoRoomId) return echoRoomId;
  try { echoRoomId = sessionStorage.getItem(ECHO_ROOM_KEY); } catch { /* private mode */ }
  if (!echoRoomId || !/^[A-Za-z0-9_-]{16,64}$/.test(echoRoomId)) {
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    echoRoomId = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
    try { sessionStorage.setItem(ECHO_ROOM_KEY, echoRoomId); } catch { /* kept for this page only */ }
  }
  return echoRoomId;
}

const app = {
  ws: null,
  ready: false,
  retries: 0,
  reconnectTimer: null,
  refused: false,
  audioOutRate: 24000,
  ctx: null,
  capture: null,
  playback: null,
  micAnalyser: null,
  outAnalyser: null,
  stream: null,
  micOn: false,
  agentState: 'idle',
  flushedTurn: 0,
  agentLines: new Map(),
  userPartial: null,
  slowModel: false,
  pendingTyped: [],
  stats: { framesIn: 0, framesOut: 0, playedReports: 0 },
};

// ------------------------------------------------------------------ connection

function wsUrl() {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}/ws`;
}

function connect() {
  clearTimeout(app.reconnectTimer);
  setConn('connecting', 'connecting…');
  const ws = new WebSocket(wsUrl());
  ws.binaryType = 'arraybuffer';
  app.ws = ws;
  ws.onopen = () => {
    const hello = { type: 'hello', sample_rate: CAPTURE_RATE, format: 'pcm16', overlays: personaOverlays(), aec: !serverEcho(), echo_reference: serverEcho() };
    if (serverEcho()) hello.echo_room = echoRoom();
    ws.send(JSON.stringify(hello));
  };
  ws.onmessage = (message) => {
    if (typeof message.data === 'string') {
      let event;
      try { event = JSON.parse(message.data); } catch { return; }
      onEvent(event);
    } else {
      onAudio(message.data);
    }
  };
  ws.onclose = (event) => {
    if (app.ws !== ws) return;
    app.ready = false;
    if (event.code === 4401) {
      app.refused = true;
      setConn('refused', 'not authorised');
      showBanner('The access token is missing or was rotated. Open the address printed by `convers serve` again.', true);
      return;
    }
    const delay = Math.min(RECONNECT_MAX_MS, RECONNECT_FIRST_MS * 2 ** app.retries) * (0.8 + Math.random() * 0.4);
    app.retries += 1;
    setConn('offline', `reconnecting in ${Math.ceil(delay / 1000)} s…`);
    app.reconnectTimer = setTimeout(connect, delay);
  };
}

function send(event) {
  if (app.ws && app.ws.readyState === WebSocket.OPEN) app.ws.send(JSON.stringify(event));
}

function setConn(state, text) {
  ui.conn.dataset.state = state;
  ui.conn.textContent = text;
}

// Persona overlays for this connection from the address: ?persona=work or ?persona=work,travel
// (files under data_dir/persona/ on the server; docs/protocol.md, hello).
function personaOverlays() {
  const value = new URLSearchParams(location.search).get('persona') || '';
  return value.split(',').map((name) => name.trim()).filter((name) => /^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$/.test(name)).slice(0, 4);
}

// ------------------------------------------------------------------ server events

function onEvent(event) {
  switch (event.type) {
    case 'ready':
      app.ready = true;
      app.retries = 0;
      app.flushedTurn = 0;  // a new connection is a new session: turn ids start again
      ui.recording.hidden = true;  // until this session says it records
      app.pendingTyped = [];  // sent on a connection that is gone: never echoed now
      app.audioOutRate = event.audio_out.sample_rate;
      setConn('connected', 'connected');
      if (app.playback) {
        app.playback.port.postMessage({ type: 'reset' });
        app.playback.port.postMessage({ type: 'config', rate: app.audioOutRate });
      }
      break;
    case 'state':
      setAgentState(event.state);
      break;
    case 'recording':
      // The server records this session's audio (recorder.enabled): the user always sees it.
      ui.recording.hidden = !event.on;
      break;
    case 'status':
      if (event.code === 'llm_slow') showSlowModel(event);
      // The reply had nothing to say: the agent says a short line instead, and the page says why.
      if (event.code === 'reply_fallback') ui.status.textContent = `The model gave no answer (${event.message})`;
      break;
    case 'transcript':
      showUserText(event.text, Boolean(event.final), event.turn, event.stored);
      break;
    case 'reply':
      appendAgentText(event.turn, event.delta || '');
      break;
    case 'flush':
      app.flushedTurn = Math.max(app.flushedTurn, event.turn);
      if (app.playback) app.playback.port.postMessage({ type: 'flush', turn: event.turn });
      markInterrupted(event.turn);
      break;
    case 'pause':
    case 'resume':
      if (app.playback) app.playback.port.postMessage({ type: event.type, turn: event.turn });
      break;
    case 'metrics':
      showMetrics(event);
      break;
    case 'error':
      showError(event);
      break;
    case 'notice':
      // Memory off (`memory`: the banner stays) or working again (`memory_restored`).
      showBanner(event.message || event.code, event.code === 'memory');
      break;
  }
}

function onAudio(buffer) {
  if (buffer.byteLength < 8) return;
  const header = new DataView(buffer, 0, 8);
  const turn = header.getUint32(0, true);
  const seq = header.getUint32(4, true);
  if (turn <= app.flushedTurn || !app.playback) return;
  app.stats.framesIn += 1;
  const pcm = buffer.slice(8);
  app.playback.port.postMessage({ type: 'audio', turn, seq, pcm }, [pcm]);
}

function showError(event) {
  const message = event.message || event.code || 'unknown error';
  if (NO_LLM_CODES.has(event.code)) {
    showBanner(`No language model is answering: ${message}`, true);
  } else {
    showBanner(message, false);
  }
}

let bannerTimer = null;
function showBanner(text, sticky) {
  clearTimeout(bannerTimer);
  ui.bannerText.textContent = text;
  ui.banner.hidden = false;
  ui.banner.dataset.sticky = sticky ? 'yes' : 'no';
  if (!sticky) bannerTimer = setTimeout(() => { ui.banner.hidden = true; }, 8000);
}

// ------------------------------------------------------------------ transcript

function entry(kind) {
  const div = document.createElement('div');
  div.className = `msg ${kind}`;
  ui.transcript.appendChild(div);
  while (ui.transcript.children.length > MAX_TRANSCRIPT_ENTRIES) {
    const first = ui.transcript.firstElementChild;
    for (const [turn, node] of app.agentLines) if (node === first) app.agentLines.delete(turn);
    first.remove();
  }
  ui.transcript.scrollTop = ui.transcript.scrollHeight;
  return div;
}

function showUserText(text, final, turn, stored) {
  const typed = final && app.pendingTyped.length && app.pendingTyped[0].textContent === text;
  if (!typed && !app.userPartial) app.userPartial = entry('user partial');
  const line = typed ? app.pendingTyped.shift() : app.userPartial;
  line.textContent = text;
  if (final) {
    line.classList.remove('partial');
    if (!typed) app.userPartial = null;
    // The echo waits for memory's commit while the reply starts: it may arrive after the reply's
    // first words, but it belongs above them.
    const reply = app.agentLines.get(turn);
    if (reply) ui.transcript.insertBefore(line, reply);
    if (stored === false) {
      line.classList.add('unsaved');
      line.title = 'Not saved to memory';
    }
  }
  ui.transcript.scrollTop = ui.transcript.scrollHeight;
}

function showSlowModel(event) {
  // Until the next word or state change: the orb keeps its state, the line under it says why it waits.
  app.slowModel = true;
  ui.status.textContent = `Waiting for the model… it is slow (${Math.round((event.waited_ms || 0) / 1000)} s)`;
}

function appendAgentText(turn, delta) {
  if (app.slowModel) setAgentState(app.agentState);
  let line = app.agentLines.get(turn);
  if (!line) {
    line = entry('agent');
    line.dataset.turn = String(turn);
    app.agentLines.set(turn, line);
  }
  line.textContent += delta;
  ui.transcript.scrollTop = ui.transcript.scrollHeight;
}

function markInterrupted(turn) {
  for (const [t, line] of app.agentLines) if (t <= turn) line.classList.add('interrupted');
}

function showMetrics(m) {
  const parts = [];
  if (m.stt_final_ms !== undefined) parts.push(`heard ${Math.round(m.stt_final_ms)} ms`);
  if (m.llm_first_token_ms !== undefined) parts.push(`first word ${Math.round(m.llm_first_token_ms)} ms`);
  if (m.first_audio_out_ms !== undefined) parts.push(`first sound ${Math.round(m.first_audio_out_ms)} ms`);
  ui.metrics.textContent = parts.join(' · ');
}

// ------------------------------------------------------------------ audio

async function ensureAudio() {
  if (app.ctx) {
    if (app.ctx.state === 'suspended') await app.ctx.resume();
    return;
  }
  const ctx = new AudioContext({ latencyHint: 'interactive' });
  app.ctx = ctx;
  await Promise.all([
    ctx.audioWorklet.addModule('/static/capture-worklet.js'),
    ctx.audioWorklet.addModule('/static/playback-worklet.js'),
  ]);
  const playback = new AudioWorkletNode(ctx, 'playback-processor', { numberOfInputs: 0, outputChannelCount: [1] });
  playback.port.postMessage({ type: 'config', rate: app.audioOutRate });
  playback.port.onmessage = (event) => {
    if (event.data.type === 'played') {
      app.stats.playedReports += 1;
      send({ type: 'played', turn: event.data.turn, ms: event.data.ms });
    }
  };
  app.outAnalyser = ctx.createAnalyser();
  app.outAnalyser.fftSize = 512;
  playback.connect(app.outAnalyser);
  app.outAnalyser.connect(ctx.destination);
  app.playback = playback;
  if (ctx.state === 'suspended') await ctx.resume();
}

async function startMic() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    showBanner('This browser gives no microphone here: the page must be opened over https (the address convers serve printed).', true);
    return false;
  }
  try {
    app.stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: !serverEcho(), noiseSuppression: true, autoGainControl: true, channelCount: 1 },
    });
  } catch (error) {
    const denied = error && (error.name === 'NotAllowedError' || error.name === 'SecurityError');
    showBanner(denied
      ? 'Microphone access was refused. Allow it in the browser\'s site settings and tap the circle again, or type below.'
      : `The microphone could not be opened (${error && error.name}: ${error && error.message}). You can type below.`, true);
    return false;
  }
  const ctx = app.ctx;
  const source = ctx.createMediaStreamSource(app.stream);
  // With the server cancelling the echo, what the page plays goes into the capture node too: each
  // frame then carries the exact reference beside the microphone.
  const reference = serverEcho() && Boolean(app.playback);
  const capture = new AudioWorkletNode(ctx, 'capture-processor', {
    numberOfInputs: reference ? 2 : 1, numberOfOutputs: 1, outputChannelCount: [1],
    processorOptions: { targetRate: CAPTURE_RATE, frameMs: FRAME_MS, reference },
  });
  if (reference) app.playback.connect(capture, 0, 1);
  capture.port.onmessage = (event) => {
    if (app.micOn && app.ready && app.ws.readyState === WebSocket.OPEN) {
      app.stats.framesOut += 1;
      app.ws.send(event.data);
    }
  };
  // A silent sink keeps the capture node pulled by the graph in every browser.
  const sink = ctx.createGain();
  sink.gain.value = 0;
  source.connect(capture).connect(sink).connect(ctx.destination);
  app.micAnalyser = ctx.createAnalyser();
  app.micAnalyser.fftSize = 512;
  source.connect(app.micAnalyser);
  app.capture = capture;
  return true;
}

async function onOrbTap() {
  await ensureAudio();
  if (!app.stream) {
    if (!(await startMic())) return;
    app.micOn = true;
  } else {
    app.micOn = !app.micOn;
    for (const track of app.stream.getAudioTracks()) track.enabled = app.micOn;
  }
  if (app.micOn && !ui.banner.hidden && ui.banner.dataset.sticky !== 'yes') ui.banner.hidden = true;
  ui.orb.setAttribute('aria-label', app.micOn ? 'Tap to mute' : 'Tap to talk');
  setAgentState(app.agentState);
}

function setAgentState(state) {
  app.agentState = state;
  app.slowModel = false;
  const shown = app.micOn || state === 'thinking' || state === 'speaking' ? state : 'idle';
  ui.orb.dataset.state = shown;
  ui.status.textContent = {
    idle: app.stream ? 'Muted. Tap the circle to talk' : 'Tap the circle to talk',
    listening: 'Listening…',
    thinking: 'Thinking…',
    speaking: 'Speaking…',
  }[shown] || state;
}

// ------------------------------------------------------------------ the circle

const orb = { level: 0, phase: 0, scale: 1 };

function levelOf(analyser) {
  if (!analyser) return 0;
  const data = new Float32Array(analyser.fftSize);
  analyser.getFloatTimeDomainData(data);
  let sum = 0;
  for (let i = 0; i < data.length; i++) sum += data[i] * data[i];
  return Math.min(1, Math.sqrt(sum / data.length) * 6);
}

function drawOrb(now) {
  const canvas = ui.canvas;
  const g = canvas.getContext('2d');
  const w = canvas.width;
  const h = canvas.height;
  const state = ui.orb.dataset.state;
  const mic = app.micOn ? levelOf(app.micAnalyser) : 0;
  const out = levelOf(app.outAnalyser);
  const target = state === 'speaking' ? Math.max(out, mic * 0.4) : mic;
  orb.level += (target - orb.level) * (target > orb.level ? 0.35 : 0.08);
  orb.phase += state === 'thinking' ? 0.05 : 0.015 + orb.level * 0.06;
  const breathe = state === 'thinking' ? 0.04 * Math.sin(now / 260) : 0.015 * Math.sin(now / 900);
  const base = w * 0.3 * (1 + breathe + orb.level * 0.22);
  g.clearRect(0, 0, w, h);
  const rings = state === 'idle' ? 1 : 3;
  for (let ring = 0; ring < rings; ring++) {
    g.beginPath();
    for (let i = 0; i <= 120; i++) {
      const a = (i / 120) * Math.PI * 2;
      const wobble = orb.level * 0.09 * Math.sin(a * 3 + orb.phase * (1 + ring * 0.6))
        + 0.012 * Math.sin(a * 5 - orb.phase * 2 + ring);
      const r = base * (1 + wobble) - ring * w * 0.012;
      const x = w / 2 + r * Math.cos(a);
      const y = h / 2 + r * Math.sin(a);
      if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
    }
    g.closePath();
    g.lineWidth = w * (ring === 0 ? 0.03 : 0.008);
    g.strokeStyle = `rgba(255,255,255,${ring === 0 ? 0.95 : 0.45 - ring * 0.1})`;
    g.stroke();
  }
  if (state === 'idle') {
    g.fillStyle = 'rgba(255,255,255,0.9)';
    g.font = `${Math.round(w * 0.055)}px system-ui, sans-serif`;
    g.textAlign = 'center';
    g.textBaseline = 'middle';
    g.fillText(app.stream ? 'muted' : 'tap to talk', w / 2, h / 2);
  }
  requestAnimationFrame(drawOrb);
}

// ------------------------------------------------------------------ typed input

ui.form.addEventListener('submit', async (event) => {
  event.preventDefault();
  const text = ui.input.value.trim();
  if (!text) return;
  ui.input.value = '';
  await ensureAudio();  // a tap on Send is a user gesture: unlock playback for the reply
  send({ type: 'text', text });
  // Shown at once as pending; the server's echo (once the turn is stored) makes it final.
  if (app.ws && app.ws.readyState === WebSocket.OPEN) {
    const line = entry('user partial');
    line.textContent = text;
    app.pendingTyped.push(line);
  }
});

// ------------------------------------------------------------------ memory panel

const memoryView = { offset: 0, query: '' };

async function api(method, path) {
  const response = await fetch(path, { method, credentials: 'same-origin', headers: { Accept: 'application/json' } });
  let body = {};
  try { body = await response.json(); } catch { /* empty body */ }
  if (!response.ok) throw new Error(body.error || `${method} ${path} failed: HTTP ${response.status}`);
  return body;
}

function memoryItem(item) {
  const li = document.createElement('li');
  const text = document.createElement('p');
  text.textContent = item.text;
  const meta = document.createElement('span');
  meta.className = 'meta';
  const when = item.time ? new Date(item.time).toLocaleString() : '';
  meta.textContent = [item.role, when, item.score !== undefined ? `match ${item.score.toFixed(2)}` : '']
    .filter(Boolean).join(' · ');
  li.append(text, meta, forgetButton('Forget', `/api/memory/${encodeURIComponent(item.id)}`, li));
  return li;
}

// A button that deletes `path` on the server and, once it is gone there, `li` from the list.
function forgetButton(label, path, li) {
  const forget = document.createElement('button');
  forget.type = 'button';
  forget.className = 'link danger';
  forget.textContent = label;
  forget.addEventListener('click', async () => {
    try {
      await api('DELETE', path);
      li.remove();
    } catch (error) {
      showBanner(error.message, false);
    }
  });
  return forget;
}

// Search keys derived from turns (names, topics): each shown with its turn, each forgettable.
function keyItem(item) {
  const li = document.createElement('li');
  li.className = 'memory-key';
  const text = document.createElement('p');
  text.textContent = `${item.kind}: ${item.key}`;
  const meta = document.createElement('span');
  meta.className = 'meta';
  meta.textContent = `from ${item.speaker}: ${item.text}`;
  const path = `/api/memory/keys/${encodeURIComponent(item.kind)}/${encodeURIComponent(item.key)}`;
  li.append(text, meta, forgetButton('Forget key', `${path}?${new URLSearchParams({ turn: item.turn_id })}`, li));
  return li;
}

async function loadKeys(q) {
  const body = await api('GET', `/api/memory/keys?${new URLSearchParams({ q })}`);
  for (const item of body.items) ui.memoryList.appendChild(keyItem(item));
}

async function loadMemory(append) {
  const q = memoryView.query;
  const params = new URLSearchParams({ limit: String(MEMORY_PAGE), offset: String(memoryView.offset) });
  if (q) params.set('q', q);
  try {
    const body = await api('GET', `/api/memory?${params}`);
    if (!append) ui.memoryList.replaceChildren();
    for (const item of body.items) ui.memoryList.appendChild(memoryItem(item));
    if (q) {
      ui.memoryCount.textContent = `${body.items.length} matching “${q}”`;
      ui.memoryMore.hidden = true;
      await loadKeys(q);
    } else {
      ui.memoryCount.textContent = body.total === 0 ? 'Nothing remembered yet.' : `${body.total} remembered turns`;
      ui.memoryMore.hidden = memoryView.offset + body.items.length >= body.total;
    }
  } catch (error) {
    ui.memoryCount.textContent = error.message;
  }
}

ui.memoryOpen.addEventListener('click', () => {
  ui.memory.hidden = false;
  memoryView.offset = 0;
  loadMemory(false);
});
ui.memoryClose.addEventListener('click', () => { ui.memory.hidden = true; });
ui.memorySearch.addEventListener('submit', (event) => {
  event.preventDefault();
  memoryView.query = ui.memoryQuery.value.trim();
  memoryView.offset = 0;
  loadMemory(false);
});
ui.memoryMore.addEventListener('click', () => {
  memoryView.offset += MEMORY_PAGE;
  loadMemory(true);
});
ui.memoryWipe.addEventListener('click', async () => {
  if (!confirm('Forget everything? This deletes every remembered turn and cannot be undone.')) return;
  try {
    const body = await api('DELETE', '/api/memory');
    ui.memoryList.replaceChildren();
    ui.memoryCount.textContent = `Forgot ${body.deleted} turns.`;
    ui.memoryMore.hidden = true;
  } catch (error) {
    showBanner(error.message, false);
  }
});

// ------------------------------------------------------------------ start

ui.orb.addEventListener('click', () => { onOrbTap(); });
ui.bannerClose.addEventListener('click', () => { ui.banner.hidden = true; });
window.addEventListener('online', () => { if (!app.refused && (!app.ws || app.ws.readyState > 1)) connect(); });

// A small read-only window for diagnostics and end-to-end tests.
window.convers = {
  stats: app.stats,
  state: () => ({ ready: app.ready, micOn: app.micOn, agentState: app.agentState, flushedTurn: app.flushedTurn }),
  sendRaw: (data) => { if (app.ws && app.ws.readyState === WebSocket.OPEN) app.ws.send(data); },
};

connect();
requestAnimationFrame(drawOrb);
