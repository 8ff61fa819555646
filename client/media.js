// @ts-check
// Media: one RTCPeerConnection per session to the server's SFU. Mic, camera and screen are
// separate local tracks on their own sendonly transceivers, so each mutes on its own. The client
// makes the first offer (to publish, or with a data channel to watch); the server then offers to
// add or stop remote tracks. A client offer the server takes cancels a server offer in flight, so
// a server offer that arrives while ours is outstanding waits: dropped if ours is answered (the
// server makes it again), applied if ours is refused (the server still waits for its answer).
// The server is ICE-lite with its host candidate in the SDP: no ICE servers, nothing to trickle.
// Remote audio plays with sound; where the browser refuses that until a gesture, tiles play
// muted, `soundBlocked` says so, and the next click or key anywhere turns sound on for all.
import { command, SIMULCAST_LAYERS, publisherOf } from "/protocol.js";
import { watchPath } from "/diagnostics.js";

/**
 * @typedef {{stream: MediaStream, video: HTMLVideoElement, el: HTMLElement, publisher: string, screen: boolean}} Tile
 */

export class Media {
  /**
   * @param {{conn: any, state: any, notice: (text: string, kind?: string) => void, changed: () => void}} deps
   */
  constructor({ conn, state, notice, changed }) {
    this.conn = conn;
    this.state = state;
    this.notice = notice;
    this.changed = changed;
    /** @type {RTCPeerConnection|null} */
    this.pc = null;
    /** @type {MediaStreamTrack|null} */ this.mic = null;
    /** @type {MediaStreamTrack|null} */ this.cam = null;
    /** @type {MediaStreamTrack|null} */ this.screen = null;
    this.micMuted = false;
    /** @type {{mic?: RTCRtpTransceiver, cam?: RTCRtpTransceiver, screen?: RTCRtpTransceiver}} */
    this.tx = {};
    this.localStream = new MediaStream();
    this.offers = 0;
    /** @type {{id: string, resolve: (sdp: string) => void, reject: (e: Error) => void}|null} */
    this.awaiting = null;
    this.chain = Promise.resolve();
    /** A server offer that came while ours was outstanding. @type {string|null} */
    this.heldOffer = null;
    /** The browser refused sound until the person interacts with the page. */
    this.soundBlocked = false;
    /** remote MediaStream id -> tile @type {Map<string, Tile>} */
    this.tiles = new Map();
    /** Remote tracks by id, with their stream, so a track can move tiles once its publisher is known. */
    /** @type {Map<string, {track: MediaStreamTrack, stream?: MediaStream}>} */
    this.received = new Map();
    /** @type {Tile|null} */ this.local = null;
    /** @type {Tile|null} */ this.localScreen = null;
    this.devices = { camera: "", mic: "", speaker: "" };
    /** publisher identity of the loudest recent speaker */
    /** @type {string|null} */ this.activeSpeaker = null;
    setInterval(() => this.sampleLevels(), 400);
  }


  /** @param {() => Promise<void>} step */
  signal(step) {
    this.chain = this.chain.then(step).catch((e) => this.notice(`Media: ${e.message}`, "error"));
    return this.chain;
  }

  peer() {
    if (this.pc) return this.pc;
    // UDP first, then the server's TCP candidate, then the relay (from `welcome`): the browser
    // ranks them so. The diagnostics panel shows which path was taken.
    const pc = new RTCPeerConnection({ iceServers: this.state.iceServers ?? [] });
    watchPath(pc);
    pc.ontrack = (e) => this.addRemoteTrack(e.track, e.streams[0]);
    pc.onconnectionstatechange = () => {
      // The server that held our media is gone (a cluster node died and another took the
      // room over): start a new peer with what we had.
      if (pc.connectionState === "failed" && this.pc === pc) {
        this.notice("Media connection lost; reconnecting media…");
        this.restart(true);
      }
      this.changed();
    };
    this.pc = pc;
    return pc;
  }

  /** Offers the peer's current m-lines and applies the server's `rtc_answer`. */
  offer() {
    this.offers++;
    return this.signal(async () => {
      const pc = this.peer();
      const msg = command("rtc_offer");
      const answer = new Promise((resolve, reject) => { this.awaiting = { id: msg.request_id, resolve, reject }; });
      answer.catch(() => {});
      const timer = setTimeout(() => this.answered(null, "no answer from the server"), 15000);
      try {
        const offer = await pc.createOffer();
        // The SFU tells a screen share by its msid: name the screen track's stream "screen".
        if (this.screen && offer.sdp) offer.sdp = offer.sdp.replaceAll(new RegExp(`msid:\\S+ ${this.screen.id}`, "g"), `msid:screen ${this.screen.id}`);
        await pc.setLocalDescription(offer);
        if (!this.conn.sendRaw({ ...msg, sdp: pc.localDescription?.sdp })) throw new Error("not connected");
        await pc.setRemoteDescription({ type: "answer", sdp: await answer });
        // The server dropped its own offer when it took ours; it makes a fresh one.
        this.heldOffer = null;
      } catch (e) {
        if (pc.signalingState === "have-local-offer") await pc.setLocalDescription({ type: "rollback" });
        // Refused: the server's offer is still outstanding there, and only we can answer it.
        const held = this.heldOffer;
        this.heldOffer = null;
        if (held && this.pc === pc) this.signal(() => this.answerOffer(pc, held));
        throw e;
      } finally {
        clearTimeout(timer);
        if (this.awaiting?.id === msg.request_id) this.answered(null);
      }
    });
  }

  /** The server's answer (or refusal) to our offer. @param {string|null} sdp @param {string} [refusal] */
  answered(sdp, refusal) {
    const waiting = this.awaiting;
    if (!waiting) return;
    this.awaiting = null;
    this.offers--;
    sdp ? waiting.resolve(sdp) : waiting.reject(new Error(refusal ?? "offer abandoned"));
  }

  /** @param {string} sdp */
  serverOffer(sdp) {
    const pc = this.pc;
    if (!pc) return;
    if (this.offers > 0) {
      this.heldOffer = sdp;
      return;
    }
    this.signal(() => this.answerOffer(pc, sdp));
  }

  /** @param {RTCPeerConnection} pc @param {string} sdp */
  async answerOffer(pc, sdp) {
    if (this.pc !== pc) return;
    await pc.setRemoteDescription({ type: "offer", sdp });
    await pc.setLocalDescription(await pc.createAnswer());
    this.conn.sendRaw(command("rtc_answer", { sdp: pc.localDescription?.sdp }));
    // An answer cannot start sending on an m-line the server's offer called inactive (a
    // source started while that offer was on its way): offer again to send.
    if (Object.values(this.tx).some((tx) => tx.direction === "sendonly" && tx.currentDirection !== "sendonly")) this.offer();
  }

  /** Watchers connect once there is something to watch. */
  startReceiving() {
    if (this.pc || ![...this.state.tracks.values()].some((t) => t.publisher !== this.state.you?.identity)) return;
    this.peer().createDataChannel("convene");
    this.offer();
  }

  get publishing() { return !!(this.mic || this.cam || this.screen); }

  /**
   * Puts `track` on the transceiver for `slot`, creating it on first use; offers when the
   * m-lines change or the server must hear that we publish again.
   * @param {"mic"|"cam"|"screen"} slot @param {MediaStreamTrack} track
   */
  async attach(slot, track) {
    const pc = this.peer();
    const stream = slot === "screen" ? new MediaStream([track]) : this.localStream;
    if (slot !== "screen") stream.addTrack(track);
    const existing = this.tx[slot];
    if (existing) {
      existing.direction = "sendonly";
      await existing.sender.replaceTrack(track);
    }
    else {
      this.tx[slot] = pc.addTransceiver(track, {
        direction: "sendonly", streams: [stream],
        sendEncodings: slot === "cam" ? SIMULCAST_LAYERS : undefined,
      });
    }
    this.offer();
  }

  /**
   * Stops one source. With others still going, its m-line goes inactive in a new offer (the
   * server's `unpublish` stops everything); the last one stops with `unpublish`.
   * @param {"mic"|"cam"|"screen"} slot
   */
  async detach(slot) {
    const track = this[slot];
    if (!track) return;
    track.stop();
    if (slot !== "screen") this.localStream.removeTrack(track);
    this[slot] = null;
    const tx = this.tx[slot];
    await tx?.sender.replaceTrack(null);
    // Inactive either way: a later offer must not claim to send on it (in a webcast's main
    // room the server refuses any offer that sends).
    if (tx) tx.direction = "inactive";
    if (this.publishing && tx) this.offer();
    else this.conn.send("unpublish");
  }

  /** @param {"audio"|"video"} kind */
  async capture(kind) {
    const id = kind === "audio" ? this.devices.mic : this.devices.camera;
    const constraints = kind === "audio"
      ? { audio: id ? { deviceId: { exact: id } } : true }
      : { video: { width: { ideal: 1280 }, height: { ideal: 720 }, ...(id ? { deviceId: { exact: id } } : {}) } };
    const stream = await navigator.mediaDevices.getUserMedia(constraints);
    return stream.getTracks()[0];
  }

  /** Mic button: first press starts the microphone; then it mutes and unmutes it. */
  async toggleMic() {
    if (this.mic) {
      this.micMuted = !this.micMuted;
      this.mic.enabled = !this.micMuted;
      this.changed();
      return;
    }
    try {
      this.mic = await this.capture("audio");
    } catch (e) {
      this.notice(`Microphone: ${/** @type {Error} */ (e).message}`, "error");
      return;
    }
    this.micMuted = false;
    await this.attach("mic", this.mic);
    this.changed();
  }

  async startCamera() {
    try {
      this.cam = await this.capture("video");
    } catch (e) {
      this.notice(`Camera: ${/** @type {Error} */ (e).message}`, "error");
      return;
    }
    this.local = this.tile("you", this.localStream, false, true);
    await this.attach("cam", this.cam);
    this.changed();
  }

  async stopCamera() {
    await this.detach("cam");
    this.local = null;
    this.changed();
  }

  toggleCamera() {
    return this.cam ? this.stopCamera() : this.startCamera();
  }

  async toggleScreen() {
    if (this.screen) {
      await this.detach("screen");
      this.localScreen = null;
      this.changed();
      return;
    }
    try {
      const stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
      this.screen = stream.getVideoTracks()[0];
    } catch (e) {
      this.notice(`Screen share: ${/** @type {Error} */ (e).message}`, "error");
      return;
    }
    const screen = this.screen;
    screen.onended = () => { if (this.screen === screen) this.toggleScreen(); };
    this.localScreen = this.tile("you-screen", new MediaStream([screen]), true, false);
    await this.attach("screen", screen);
    this.changed();
  }

  /** Stops everything we send (taken off stage, or leaving). */
  async stopAll() {
    const slots = /** @type {const} */ (["mic", "cam", "screen"]).filter((slot) => this[slot]);
    if (slots.length === 0) return;
    for (const slot of slots) {
      this[slot]?.stop();
      if (slot !== "screen") this.localStream.removeTrack(/** @type {MediaStreamTrack} */ (this[slot]));
      this[slot] = null;
    }
    this.local = this.localScreen = null;
    // One `unpublish` stops everything at the server; no offer (it would be refused off stage).
    this.conn.send("unpublish");
    for (const slot of slots) {
      const tx = this.tx[slot];
      if (!tx) continue;
      tx.direction = "inactive";
      await tx.sender.replaceTrack(null);
    }
    this.changed();
  }

  /** A device picked in the settings: swap the live track for one from that device. @param {"camera"|"mic"|"speaker"} which @param {string} id */
  async useDevice(which, id) {
    this.devices[which] = id;
    try {
      if (which === "speaker") {
        for (const t of this.tiles.values()) await /** @type {any} */ (t.video).setSinkId?.(id);
      } else if (which === "camera" && this.cam) {
        const old = this.cam;
        this.cam = await this.capture("video");
        this.localStream.removeTrack(old);
        this.localStream.addTrack(this.cam);
        old.stop();
        await this.tx.cam?.sender.replaceTrack(this.cam);
      } else if (which === "mic" && this.mic) {
        const old = this.mic;
        this.mic = await this.capture("audio");
        this.mic.enabled = !this.micMuted;
        this.localStream.removeTrack(old);
        this.localStream.addTrack(this.mic);
        old.stop();
        await this.tx.mic?.sender.replaceTrack(this.mic);
      }
    } catch (e) {
      this.notice(`Device: ${/** @type {Error} */ (e).message}`, "error");
    }
    this.changed();
  }

  /** After a fresh welcome the server has no peer for us: start over with what we had. @param {boolean} mayPublish */
  restart(mayPublish) {
    const had = { mic: !!this.mic, cam: !!this.cam };
    this.pc?.close();
    for (const t of [this.mic, this.cam, this.screen]) t?.stop();
    Object.assign(this, { pc: null, mic: null, cam: null, screen: null, tx: {}, local: null, localScreen: null, chain: Promise.resolve(), localStream: new MediaStream(), heldOffer: null });
    if (this.awaiting) this.answered(null);
    this.tiles.clear();
    if (mayPublish && had.cam) this.startCamera();
    if (mayPublish && had.mic) this.toggleMic();
    if (!had.cam && !had.mic) this.startReceiving();
  }

  /** @param {string} key @param {MediaStream} stream @param {boolean} screen @param {boolean} [mine] @returns {Tile} */
  tile(key, stream, screen, mine = false) {
    const video = /** @type {HTMLVideoElement} */ (document.createElement("video"));
    video.autoplay = true;
    video.playsInline = true;
    video.muted = mine;
    if (mine && !screen) video.classList.add("mirrored");
    video.srcObject = stream;
    if (this.devices.speaker) /** @type {any} */ (video).setSinkId?.(this.devices.speaker).catch(() => {});
    if (mine) video.play().catch(() => {});
    else this.play(video);
    const caption = document.createElement("figcaption");
    const el = document.createElement("figure");
    el.className = "tile";
    el.dataset.publisher = key;
    if (screen) el.dataset.screen = "";
    el.append(video, caption);
    return { stream, video, el, publisher: key, screen };
  }

  /**
   * A remote track lands in its publisher's tile: one tile for camera and microphone, another for
   * a screen share (the SFU puts all of a publisher's tracks in one stream; a video element plays
   * one video track).
   * @param {MediaStreamTrack} track @param {MediaStream} [stream]
   */
  addRemoteTrack(track, stream) {
    this.received.set(track.id, { track, stream });
    const info = this.state.tracks.get(track.id);
    const publisher = publisherOf(this.state.tracks, track.id, stream?.id);
    const screen = track.kind === "video" && info?.source === "screen";
    const key = `${publisher}:${screen ? "screen" : "camera"}`;
    let tile = this.tiles.get(key);
    if (!tile) {
      tile = this.tile(publisher, new MediaStream(), screen);
      this.tiles.set(key, tile);
    }
    // An old receiver of the same track (its m-line stopping) gives way: one track per id.
    const kept = tile.stream.getTracks().filter((old) => old.id !== track.id);
    this.retile(tile, [...kept, track]);
    // This track object, not its id: the server may carry the same track on a new m-line
    // while the old one stops, and both receivers then have the same id.
    track.addEventListener("ended", () => this.dropReceived(track));
    const s = /** @type {any} */ (stream);
    if (s && !s.watched) {
      s.watched = true;
      s.addEventListener("removetrack", (/** @type {MediaStreamTrackEvent} */ e) => this.dropReceived(e.track));
    }
    this.changed();
  }

  /**
   * `track_published` arrived after the media: move the track to its publisher's tile.
   * @param {string} trackId
   */
  placeTrack(trackId) {
    const got = this.received.get(trackId);
    const publisher = this.state.tracks.get(trackId)?.publisher;
    if (!got || !publisher) return;
    const placed = [...this.tiles.values()].some((t) => t.publisher === publisher && t.stream.getTracks().includes(got.track));
    if (placed) return;
    this.dropRemoteTrack(trackId);
    this.addRemoteTrack(got.track, got.stream);
  }

  /**
   * Plays a remote tile with sound. A new load interrupts an earlier play() (AbortError): the
   * later play() decides. Only a refusal of sound (NotAllowedError) mutes, until a gesture.
   * @param {HTMLVideoElement} video
   */
  play(video) {
    video.muted = this.soundBlocked;
    video.play().catch((/** @type {Error} */ e) => {
      if (e.name !== "NotAllowedError" || video.muted) return;
      video.muted = true;
      video.play().catch(() => {});
      this.blockSound();
    });
  }

  blockSound() {
    if (this.soundBlocked) return;
    this.soundBlocked = true;
    const unblock = () => {
      for (const type of ["pointerdown", "keydown"]) document.removeEventListener(type, unblock, true);
      this.soundBlocked = false;
      for (const t of this.tiles.values()) this.play(t.video);
      this.changed();
    };
    for (const type of ["pointerdown", "keydown"]) document.addEventListener(type, unblock, true);
    this.notice("Your browser holds back sound until you interact with the page: click anywhere to hear the room.");
    this.changed();
  }

  /**
   * A tile's tracks changed: it gets a new stream. Chromium's player does not follow tracks
   * added to or removed from the stream it plays once it has loaded (a camera started again
   * stayed black), and assigning the same stream again does not reload it.
   * @param {Tile} tile @param {MediaStreamTrack[]} tracks
   */
  retile(tile, tracks) {
    tile.stream = new MediaStream(tracks);
    tile.video.srcObject = tile.stream;
    this.play(tile.video);
  }

  /** Removes tracks from every tile; a tile left with none goes. @param {(t: MediaStreamTrack) => boolean} gone */
  dropTracks(gone) {
    for (const [key, t] of this.tiles) {
      const tracks = t.stream.getTracks();
      const kept = tracks.filter((x) => !gone(x));
      if (kept.length === tracks.length) continue;
      if (kept.length === 0) this.dropTile(key);
      else this.retile(t, kept);
    }
  }

  /** A receiver's track ended. @param {MediaStreamTrack} track */
  dropReceived(track) {
    if (this.received.get(track.id)?.track === track) this.received.delete(track.id);
    this.dropTracks((x) => x === track);
  }

  /**
   * The server unpublished a track. Its receiver stays known while it lives: a track moving
   * with its publisher into a breakout is unpublished and published again on the same m-line,
   * with no new `track` event to bring it back.
   * @param {string} trackId
   */
  dropRemoteTrack(trackId) {
    this.dropTracks((x) => x.id === trackId);
  }

  /** @param {string} key */
  dropTile(key) {
    this.tiles.delete(key);
    this.changed();
  }

  /** Active speaker: the loudest remote audio above a floor, held until someone else is louder. */
  sampleLevels() {
    if (!this.pc) return;
    let best = null;
    let bestLevel = 0.02;
    for (const r of this.pc.getReceivers()) {
      if (r.track.kind !== "audio") continue;
      const level = r.getSynchronizationSources()[0]?.audioLevel ?? 0;
      if (level <= bestLevel) continue;
      const tile = [...this.tiles.values()].find((t) => t.stream.getTracks().includes(r.track));
      if (tile) { best = tile.publisher; bestLevel = level; }
    }
    if (best && best !== this.activeSpeaker) {
      this.activeSpeaker = best;
      this.changed();
    }
  }
}
