// The consult page: publishes camera and microphone over WHIP, receives the
// other participants over WHEP, and shows the received quality once a second.
//
// The consult id and join token come from the URL fragment
// (`/#consult=ID&token=TOKEN`): a fragment is never sent to the server, so the
// token stays out of access logs and Referer headers. Optional fragment keys:
// `video=WIDTHxHEIGHT` (capture size, default 1280x720) and `simulcast=0`
// (send one encoding instead of three).
//
// Everything the indicator shows is also on `window.switchboardStats`, and
// the connection log on `window.switchboardLog`, so automated checks read the
// same figures a person sees.
'use strict';

(() => {
  const params = new URLSearchParams(location.hash.slice(1));
  const consult = params.get('consult');
  const token = params.get('token');
  const capture = parseSize(params.get('video')) || { width: 1280, height: 720 };
  const wantSimulcast = params.get('simulcast') !== '0';

  // Three layers at a quarter, half and full resolution. The appliance picks
  // one per subscriber from its bandwidth estimate; the rids are listed
  // lowest first, which is the order the appliance numbers layers in.
  const SIMULCAST = [
    { rid: 'r0', scaleResolutionDownBy: 4, maxBitrate: 150000 },
    { rid: 'r1', scaleResolutionDownBy: 2, maxBitrate: 500000 },
    { rid: 'r2', scaleResolutionDownBy: 1, maxBitrate: 1500000 },
  ];
  const SAMPLE_MS = 1000;
  const HISTORY = 300;

  const $ = (id) => document.getElementById(id);
  const started = performance.now();

  const stats = {
    state: 'idle',
    error: null,
    consult,
    participant: null,
    role: null,
    capture,
    simulcast: false,
    timeToFirstFrameMs: null,
    publish: {
      leg: null,
      connection: 'new',
      ice: 'new',
      layers: {},
      availableOutgoingKbps: 0,
      rttMs: 0,
    },
    subscribe: { leg: null, connection: 'new', ice: 'new' },
    video: {
      frameWidth: 0,
      frameHeight: 0,
      framesDecoded: 0,
      framesDropped: 0,
      keyFramesDecoded: 0,
      framesPerSecond: 0,
      packetsReceived: 0,
      packetsLost: 0,
      lossPercent: 0,
      bitrateKbps: 0,
      nackCount: 0,
      pliCount: 0,
      layer: null,
      layerSwitches: 0,
      codec: null,
    },
    audio: {
      packetsReceived: 0,
      packetsLost: 0,
      lossPercent: 0,
      totalSamplesReceived: 0,
      concealedSamples: 0,
      concealmentPercent: 0,
      codec: null,
    },
    samples: 0,
    history: [],
  };
  const log = [];
  window.switchboardStats = stats;
  window.switchboardLog = log;

  let localStream = null;
  let pubPc = null;
  let subPc = null;
  let joinedAt = 0;
  let timer = null;
  let previous = null;

  function parseSize(text) {
    const m = /^(\d{2,4})x(\d{2,4})$/.exec(text || '');
    return m ? { width: Number(m[1]), height: Number(m[2]) } : null;
  }

  function note(line) {
    const t = ((performance.now() - started) / 1000).toFixed(3);
    const entry = `${t}s ${line}`;
    log.push(entry);
    if (log.length > 500) log.shift();
    const pre = $('log');
    pre.textContent += entry + '\n';
    pre.scrollTop = pre.scrollHeight;
  }

  function setState(state, detail) {
    stats.state = state;
    const el = $('state');
    el.textContent = detail ? `${state}: ${detail}` : state;
    el.className = 'state' + (state === 'connected' ? ' good' : state === 'failed' ? ' bad' : '');
    note(`state ${state}${detail ? ' (' + detail + ')' : ''}`);
  }

  // The token's claims are readable (base64url JSON); the signature is
  // checked by the server, this only labels the page.
  function claimsOf(t) {
    try {
      const part = t.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      return JSON.parse(atob(part + '='.repeat((4 - (part.length % 4)) % 4)));
    } catch (_) {
      return null;
    }
  }

  function apiPath(kind) {
    return `/v1/consults/${encodeURIComponent(consult)}/${kind}`;
  }

  // WHIP/WHEP (RFC 9725): POST the offer, apply the answer, remember the
  // leg's URL for DELETE. The appliance is ICE-lite and learns our address
  // from our connectivity checks, so the offer goes out without waiting for
  // candidate gathering.
  async function negotiate(pc, kind) {
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    const response = await fetch(apiPath(kind), {
      method: 'POST',
      headers: { 'Content-Type': 'application/sdp', Authorization: `Bearer ${token}` },
      body: pc.localDescription.sdp,
    });
    const body = await response.text();
    if (response.status !== 201) {
      let reason = body;
      try {
        reason = JSON.parse(body).reason || body;
      } catch (_) {
        // not JSON: the text is the reason
      }
      throw new Error(`${kind} answered ${response.status}: ${reason}`);
    }
    const location = response.headers.get('Location');
    if (!location) throw new Error(`${kind} answer has no Location`);
    await pc.setRemoteDescription({ type: 'answer', sdp: body });
    const leg = new URL(location, document.baseURI).pathname;
    note(`${kind} leg ${leg}`);
    return leg;
  }

  function watch(pc, side) {
    pc.addEventListener('connectionstatechange', () => {
      stats[side].connection = pc.connectionState;
      note(`${side} connection ${pc.connectionState}`);
      if (pc.connectionState === 'failed') setState('failed', `${side} connection failed`);
      refreshState();
    });
    pc.addEventListener('iceconnectionstatechange', () => {
      stats[side].ice = pc.iceConnectionState;
      note(`${side} ice ${pc.iceConnectionState}`);
    });
  }

  function refreshState() {
    if (stats.state === 'failed' || stats.state === 'left') return;
    if (stats.publish.connection === 'connected' && stats.subscribe.connection === 'connected') {
      if (stats.state !== 'connected') setState('connected');
    }
  }

  function preferVp8(transceiver) {
    // VP8 first: every browser encodes VP8 simulcast, and the appliance reads
    // its key-frame flags when it switches a subscriber between layers.
    if (!transceiver.setCodecPreferences || !window.RTCRtpReceiver.getCapabilities) return;
    const codecs = RTCRtpReceiver.getCapabilities('video').codecs;
    const vp8 = codecs.filter((c) => c.mimeType.toLowerCase() === 'video/vp8');
    const rest = codecs.filter((c) => c.mimeType.toLowerCase() !== 'video/vp8');
    if (vp8.length) transceiver.setCodecPreferences([...vp8, ...rest]);
  }

  async function publish() {
    pubPc = new RTCPeerConnection({ bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' });
    watch(pubPc, 'publish');
    const [audio] = localStream.getAudioTracks();
    const [video] = localStream.getVideoTracks();
    if (audio) pubPc.addTransceiver(audio, { direction: 'sendonly', streams: [localStream] });
    let videoTx = null;
    if (video) {
      const init = { direction: 'sendonly', streams: [localStream] };
      if (wantSimulcast) init.sendEncodings = SIMULCAST.map((e) => ({ ...e }));
      try {
        videoTx = pubPc.addTransceiver(video, init);
      } catch (e) {
        // A browser without simulcast sends one encoding.
        note(`simulcast refused (${e.message}); sending one encoding`);
        videoTx = pubPc.addTransceiver(video, { direction: 'sendonly', streams: [localStream] });
      }
      preferVp8(videoTx);
    }
    stats.publish.leg = await negotiate(pubPc, 'whip');
    if (videoTx) {
      const p = videoTx.sender.getParameters();
      stats.simulcast = (p.encodings || []).filter((e) => e.rid).length > 1;
      // Under CPU load keep each layer's resolution and lower the frame
      // rate: the appliance adapts subscribers by switching layers, which
      // only works while the layers keep their sizes.
      p.degradationPreference = 'maintain-resolution';
      try {
        await videoTx.sender.setParameters(p);
      } catch (e) {
        note(`degradationPreference not applied: ${e.message}`);
      }
    }
  }

  async function subscribe() {
    subPc = new RTCPeerConnection({ bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' });
    watch(subPc, 'subscribe');
    const remote = new MediaStream();
    const el = $('remote');
    el.srcObject = remote;
    subPc.addEventListener('track', (ev) => {
      remote.addTrack(ev.track);
      note(`receiving ${ev.track.kind}`);
      el.play().catch((e) => note(`remote playback waits for a click: ${e.message}`));
    });
    subPc.addTransceiver('audio', { direction: 'recvonly' });
    preferVp8(subPc.addTransceiver('video', { direction: 'recvonly' }));
    firstFrame(el);
    stats.subscribe.leg = await negotiate(subPc, 'whep');
  }

  function firstFrame(el) {
    const mark = (how) => {
      if (stats.timeToFirstFrameMs !== null || !joinedAt) return;
      stats.timeToFirstFrameMs = Math.round(performance.now() - joinedAt);
      note(`first remote frame after ${stats.timeToFirstFrameMs} ms (${how})`);
    };
    if (el.requestVideoFrameCallback) el.requestVideoFrameCallback(() => mark('frame callback'));
    el.addEventListener('loadeddata', () => mark('loadeddata'), { once: true });
  }

  async function join() {
    if (stats.state !== 'idle' && stats.state !== 'left' && stats.state !== 'failed') return;
    $('join').disabled = true;
    stats.error = null;
    stats.timeToFirstFrameMs = null;
    joinedAt = performance.now();
    setState('joining');
    try {
      localStream = await navigator.mediaDevices.getUserMedia({
        audio: true,
        video: {
          width: { ideal: capture.width },
          height: { ideal: capture.height },
          frameRate: { ideal: 30 },
        },
      });
      $('local').srcObject = localStream;
      const settings = localStream.getVideoTracks()[0]?.getSettings() || {};
      if (settings.width && settings.height) {
        stats.capture = { width: settings.width, height: settings.height };
      }
      note(`camera ${settings.width}x${settings.height}`);
      await Promise.all([publish(), subscribe()]);
      $('leave').disabled = false;
      if (!timer) timer = setInterval(() => sample().catch((e) => note(`stats: ${e.message}`)), SAMPLE_MS);
      setState('negotiated');
      refreshState();
    } catch (e) {
      stats.error = e.message;
      setState('failed', e.message);
      await leave(true);
      $('join').disabled = false;
    }
  }

  async function leave(afterFailure) {
    $('leave').disabled = true;
    if (timer) {
      clearInterval(timer);
      timer = null;
    }
    const legs = [stats.publish.leg, stats.subscribe.leg].filter(Boolean);
    await Promise.all(
      legs.map((leg) =>
        fetch(leg, { method: 'DELETE', headers: { Authorization: `Bearer ${token}` }, keepalive: true })
          .then((r) => note(`DELETE ${leg}: ${r.status}`))
          .catch((e) => note(`DELETE ${leg}: ${e.message}`)),
      ),
    );
    stats.publish.leg = null;
    stats.subscribe.leg = null;
    for (const pc of [pubPc, subPc]) if (pc) pc.close();
    pubPc = subPc = null;
    if (localStream) localStream.getTracks().forEach((t) => t.stop());
    localStream = null;
    $('local').srcObject = null;
    $('remote').srcObject = null;
    if (afterFailure !== true) {
      setState('left');
      $('join').disabled = false;
    }
  }

  function layerOf(height) {
    // The other side uses this page's ladder (full, half, quarter of its
    // capture); the layer is the rung nearest to the decoded height.
    if (!height) return null;
    const full = stats.capture.height;
    let best = 0;
    SIMULCAST.forEach((e, i) => {
      const h = full / e.scaleResolutionDownBy;
      if (Math.abs(h - height) < Math.abs(full / SIMULCAST[best].scaleResolutionDownBy - height)) best = i;
    });
    return SIMULCAST[best].rid;
  }

  function percent(part, whole) {
    return whole > 0 ? Math.round((1000 * part) / whole) / 10 : 0;
  }

  async function sample() {
    const now = performance.now();
    const current = { at: now, videoBytes: 0, sent: {} };
    if (subPc) {
      const report = await subPc.getStats();
      const codecs = {};
      report.forEach((s) => {
        if (s.type === 'codec') codecs[s.id] = s.mimeType;
      });
      report.forEach((s) => {
        if (s.type !== 'inbound-rtp') return;
        if (s.kind === 'video') {
          const v = stats.video;
          const height = s.frameHeight || 0;
          if (height && v.frameHeight && height !== v.frameHeight) {
            v.layerSwitches += 1;
            note(`remote video ${v.frameWidth}x${v.frameHeight} -> ${s.frameWidth}x${height}`);
          }
          v.frameWidth = s.frameWidth || 0;
          v.frameHeight = height;
          v.framesDecoded = s.framesDecoded || 0;
          v.framesDropped = s.framesDropped || 0;
          v.keyFramesDecoded = s.keyFramesDecoded || 0;
          v.framesPerSecond = s.framesPerSecond || 0;
          v.packetsReceived = s.packetsReceived || 0;
          v.packetsLost = Math.max(0, s.packetsLost || 0);
          v.lossPercent = percent(v.packetsLost, v.packetsLost + v.packetsReceived);
          v.nackCount = s.nackCount || 0;
          v.pliCount = s.pliCount || 0;
          v.layer = layerOf(height);
          v.codec = codecs[s.codecId] || null;
          current.videoBytes = s.bytesReceived || 0;
        } else if (s.kind === 'audio') {
          const a = stats.audio;
          a.packetsReceived = s.packetsReceived || 0;
          a.packetsLost = Math.max(0, s.packetsLost || 0);
          a.lossPercent = percent(a.packetsLost, a.packetsLost + a.packetsReceived);
          a.totalSamplesReceived = s.totalSamplesReceived || 0;
          a.concealedSamples = s.concealedSamples || 0;
          a.concealmentPercent = percent(a.concealedSamples, a.totalSamplesReceived);
          a.codec = codecs[s.codecId] || null;
        }
      });
    }
    if (pubPc) {
      const report = await pubPc.getStats();
      const remote = {};
      report.forEach((s) => {
        if (s.type === 'remote-inbound-rtp' && s.kind === 'video') remote[s.localId] = s;
        if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') {
          // The sender's bandwidth estimate towards the appliance, and the
          // round trip the appliance's RTCP reports imply.
          stats.publish.availableOutgoingKbps = Math.round((s.availableOutgoingBitrate || 0) / 1000);
          stats.publish.rttMs = Math.round(1000 * (s.currentRoundTripTime || 0));
        }
      });
      report.forEach((s) => {
        if (s.type !== 'outbound-rtp' || s.kind !== 'video') return;
        const rid = s.rid || 'single';
        current.sent[rid] = s.bytesSent || 0;
        const before = previous && previous.sent[rid];
        const seconds = previous ? (now - previous.at) / 1000 : 0;
        stats.publish.layers[rid] = {
          frameWidth: s.frameWidth || 0,
          frameHeight: s.frameHeight || 0,
          framesEncoded: s.framesEncoded || 0,
          bitrateKbps: seconds > 0 && before !== undefined ? Math.round((8 * (current.sent[rid] - before)) / seconds / 1000) : 0,
          qualityLimitation: s.qualityLimitationReason || 'none',
          nackCount: s.nackCount || 0,
          pliCount: s.pliCount || 0,
          // What the appliance's receiver reports say about this layer.
          remoteLossPercent: remote[s.id] ? Math.round(1000 * (remote[s.id].fractionLost || 0)) / 10 : null,
          remoteRttMs: remote[s.id] && remote[s.id].roundTripTime !== undefined ? Math.round(1000 * remote[s.id].roundTripTime) : null,
        };
      });
    }
    const v = stats.video;
    if (previous && now > previous.at) {
      v.bitrateKbps = Math.max(0, Math.round((8 * (current.videoBytes - previous.videoBytes)) / (now - previous.at)));
    }
    if (v.framesDecoded > 0 && stats.timeToFirstFrameMs === null && joinedAt) {
      stats.timeToFirstFrameMs = Math.round(now - joinedAt);
      note(`first remote frame by ${stats.timeToFirstFrameMs} ms (stats)`);
    }
    previous = current;
    stats.samples += 1;
    stats.history.push({
      t: Math.round(now - started),
      frameWidth: v.frameWidth,
      frameHeight: v.frameHeight,
      framesDecoded: v.framesDecoded,
      bitrateKbps: v.bitrateKbps,
      lossPercent: v.lossPercent,
      audioSamples: stats.audio.totalSamplesReceived,
    });
    if (stats.history.length > HISTORY) stats.history.shift();
    render();
  }

  function render() {
    const v = stats.video;
    const a = stats.audio;
    $('q-layer').textContent = v.layer ? `${v.layer} (${v.layerSwitches} switches)` : '–';
    $('q-res').textContent = v.frameWidth ? `${v.frameWidth}×${v.frameHeight} @ ${v.framesPerSecond || 0} fps` : '–';
    $('q-bitrate').textContent = `${v.bitrateKbps} kbit/s${v.codec ? ' ' + v.codec.replace('video/', '') : ''}`;
    $('q-loss').textContent = `video ${v.lossPercent} % (${v.packetsLost}), audio ${a.lossPercent} % (${a.packetsLost})`;
    $('q-frames').textContent = `${v.framesDecoded} (${v.keyFramesDecoded} key, ${v.framesDropped} dropped)`;
    $('q-audio').textContent = a.totalSamplesReceived
      ? `${(a.totalSamplesReceived / 48000).toFixed(1)} s received, ${a.concealmentPercent} % concealed`
      : '–';
    const layers = Object.entries(stats.publish.layers)
      .map(([rid, l]) => `${rid} ${l.frameWidth}×${l.frameHeight} ${l.bitrateKbps} kbit/s`)
      .join(', ');
    const p = stats.publish;
    $('q-send').textContent = layers
      ? `${layers}; estimate ${p.availableOutgoingKbps} kbit/s, rtt ${p.rttMs} ms`
      : '–';
  }

  window.switchboard = { join, leave: () => leave(false) };

  if (!consult || !token) {
    $('missing').hidden = false;
    return;
  }
  const claims = claimsOf(token);
  if (claims) {
    stats.participant = claims.participant || null;
    stats.role = claims.role || null;
    $('who').textContent = `${claims.participant} (${claims.role})`;
  }
  $('join').disabled = false;
  $('join').addEventListener('click', join);
  $('leave').addEventListener('click', () => leave(false));
  // Closing the tab ends the legs at once instead of after a timeout.
  window.addEventListener('pagehide', () => {
    for (const leg of [stats.publish.leg, stats.subscribe.leg].filter(Boolean)) {
      fetch(leg, { method: 'DELETE', headers: { Authorization: `Bearer ${token}` }, keepalive: true });
    }
  });
})();
