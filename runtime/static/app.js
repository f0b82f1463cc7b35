// edge-digits page: send a photo or camera frames to this server, draw what it read.
// Plain browser JavaScript, no libraries: the page must work offline on the local network.
"use strict";

const $ = (id) => document.getElementById(id);
const view = $("view"), ctx = view.getContext("2d");
const video = $("video");
const MAX_SIDE = 1280;      // the view canvas never holds more than this (a 12 MP photo is shown scaled)
const FRAME_SIDE = 640;     // camera frames are sent at this long side: enough for digits, cheap to send
const CONFIDENT = 0.75;     // below this a digit is drawn in amber
const GOOD = "rgb(0, 200, 83)", DOUBT = "rgb(255, 160, 0)";

let camera = null;          // {stream, running} while the camera loop runs
let drawn = [];             // what the last drawing showed: [{digit, confidence, box:[x,y,w,h] in canvas px}]

function mode() {
  return document.querySelector('input[name="mode"]:checked').value;
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

// POST the image bytes as the request body; returns {ok, status, body, serverMs, roundTripMs, size}.
async function read(blob) {
  const started = performance.now();
  const response = await fetch(`/v1/${mode()}?boxes=1`, {
    method: "POST",
    body: blob,
    headers: {"Content-Type": blob.type || "application/octet-stream"},
  });
  const body = await response.json();
  const timing = /read;dur=([\d.]+)/.exec(response.headers.get("Server-Timing") || "");
  const size = /(\d+)x(\d+)/.exec(response.headers.get("X-Image-Size") || "");
  return {
    ok: response.ok, status: response.status, body,
    serverMs: timing ? parseFloat(timing[1]) : null,
    roundTripMs: performance.now() - started,
    size: size ? {width: +size[1], height: +size[2]} : null,
  };
}

// The digits of a reading, whatever the mode: [{digit, confidence, box}].
function digitsOf(body) {
  if (body.digits) return body.digits;
  return [{digit: body.digit, confidence: body.confidence, box: body.box}];
}

// Draw `source` (an <img>, <video> or canvas) scaled into the view, then the boxes.
// `decoded` is the size the server decoded (boxes are in its pixels): big JPEGs are decoded reduced.
function draw(source, width, height, result) {
  const scale = Math.min(1, MAX_SIDE / Math.max(width, height));
  view.width = Math.round(width * scale);
  view.height = Math.round(height * scale);
  ctx.drawImage(source, 0, 0, view.width, view.height);
  drawn = [];
  if (!result || !result.ok) return;
  const decoded = result.size || {width, height};
  const k = view.width / decoded.width;
  const line = Math.max(2, Math.round(view.width / 300));
  ctx.lineWidth = line;
  ctx.font = `bold ${Math.max(14, Math.round(view.width / 28))}px system-ui, sans-serif`;
  ctx.textBaseline = "bottom";
  for (const d of digitsOf(result.body)) {
    if (!d.box) continue;
    const [x, y, w, h] = d.box.map((v) => Math.round(v * k));
    const colour = d.confidence >= CONFIDENT ? GOOD : DOUBT;
    ctx.strokeStyle = colour;
    ctx.strokeRect(x, y, w, h);
    const label = `${d.digit} ${(100 * d.confidence).toFixed(0)}%`;
    const tw = ctx.measureText(label).width;
    const ty = y > 30 ? y - line : y + h + 30;
    ctx.fillStyle = "rgba(0, 0, 0, 0.6)";
    ctx.fillRect(x, ty - 26, tw + 8, 26);
    ctx.fillStyle = colour;
    ctx.fillText(label, x + 4, ty - 2);
    drawn.push({digit: d.digit, confidence: d.confidence, box: [x, y, w, h], line});
  }
}

function show(result) {
  const digits = $("digits");
  digits.replaceChildren();
  if (result.ok) {
    const list = digitsOf(result.body);
    $("value").textContent = result.body.number ?? result.body.digit;
    for (const d of list) {
      const li = document.createElement("li");
      li.textContent = `${d.digit} · ${(100 * d.confidence).toFixed(1)}%`;
      li.classList.toggle("low", d.confidence < CONFIDENT);
      digits.append(li);
    }
    setStatus(list.length === 1 ? "1 digit" : `${list.length} digits`);
  } else {
    $("value").textContent = "–";
    // 422 is a normal answer for a frame without digits; everything else is an error
    setStatus(result.body.error || `error ${result.status}`, result.status !== 422);
  }
  const server = result.serverMs != null ? `read in ${result.serverMs.toFixed(0)} ms on the server, ` : "";
  $("timing").textContent = `${server}${result.roundTripMs.toFixed(0)} ms round trip`;
  document.body.dataset.readings = String(+document.body.dataset.readings + 1);
  document.body.dataset.last = result.ok ? (result.body.number ?? result.body.digit) : "";
}

// ------------------------------------------------------------ photos

async function readFile(file) {
  if (!file) return;
  stopCamera();
  document.body.dataset.state = "reading";
  setStatus(`reading ${file.name}…`);
  const url = URL.createObjectURL(file);
  try {
    const img = new Image();
    const loaded = new Promise((ok, fail) => { img.onload = ok; img.onerror = fail; });
    img.src = url;
    const [result] = await Promise.all([read(file), loaded.catch(() => null)]);
    if (img.naturalWidth) draw(img, img.naturalWidth, img.naturalHeight, result);
    show(result);
  } catch (e) {
    setStatus(`could not read ${file.name}: ${e.message || e}`, true);
  } finally {
    URL.revokeObjectURL(url);
    document.body.dataset.state = "done";
  }
}

$("file").addEventListener("change", (e) => readFile(e.target.files[0]));
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  readFile(e.dataTransfer.files[0]);
});
document.addEventListener("paste", (e) => readFile([...e.clipboardData.files].find((f) => f.type.startsWith("image/"))));

// ------------------------------------------------------------ camera

const grab = document.createElement("canvas");

function frameBlob() {
  const scale = Math.min(1, FRAME_SIDE / Math.max(video.videoWidth, video.videoHeight));
  grab.width = Math.round(video.videoWidth * scale);
  grab.height = Math.round(video.videoHeight * scale);
  grab.getContext("2d").drawImage(video, 0, 0, grab.width, grab.height);
  return new Promise((ok) => grab.toBlob(ok, "image/jpeg", 0.9));
}

// One frame at a time: the next is taken when the answer to this one is back,
// so a slow server sees fewer frames instead of a growing queue.
async function cameraLoop(session) {
  while (camera === session) {
    if (video.readyState < 2 || !video.videoWidth) {
      await new Promise((ok) => setTimeout(ok, 50));
      continue;
    }
    try {
      const blob = await frameBlob();
      const frame = grab;  // the frame that was sent, drawn under its boxes
      const result = await read(blob);
      if (camera !== session) break;
      draw(frame, frame.width, frame.height, result);
      show(result);
    } catch (e) {
      setStatus(`server not reachable: ${e.message || e}`, true);
      await new Promise((ok) => setTimeout(ok, 1000));
    }
  }
}

async function startCamera(deviceId) {
  const note = $("camera-note");
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    note.hidden = false;
    note.textContent = "This browser gives no camera to this page: cameras need HTTPS or localhost " +
      "(start the server with --tls-cert/--tls-key), or pick a photo above.";
    return;
  }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: false,
      video: deviceId ? {deviceId: {exact: deviceId}} : {facingMode: "environment", width: {ideal: 1280}, height: {ideal: 720}},
    });
    stopCamera();
    video.srcObject = stream;
    await video.play();
    camera = {stream};
    note.hidden = true;
    $("camera").textContent = "Stop camera";
    $("camera").classList.add("on");
    document.body.dataset.state = "camera";
    listCameras(stream);
    cameraLoop(camera);
  } catch (e) {
    note.hidden = false;
    note.textContent = `camera not available: ${e.message || e.name}`;
  }
}

function stopCamera() {
  if (!camera) return;
  camera.stream.getTracks().forEach((t) => t.stop());
  camera = null;
  video.srcObject = null;
  $("camera").textContent = "Start camera";
  $("camera").classList.remove("on");
  document.body.dataset.state = "idle";
}

async function listCameras(stream) {
  const select = $("cameras");
  const cams = (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === "videoinput");
  select.hidden = cams.length < 2;
  const current = stream.getVideoTracks()[0]?.getSettings().deviceId;
  select.replaceChildren(...cams.map((c, i) => new Option(c.label || `camera ${i + 1}`, c.deviceId, false, c.deviceId === current)));
}

$("camera").addEventListener("click", () => (camera ? stopCamera() : startCamera()));
$("cameras").addEventListener("change", (e) => startCamera(e.target.value));

// For tests and the curious: what the last drawing showed, in canvas pixels.
window.edgeDigits = {drawn: () => drawn};
