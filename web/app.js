// The page's side of fmnist-web: files in, flags to the wasm trainer, curves and reports out.
// Every call into the trainer is awaited before the next (it holds the GPU engine).
import init, { Trainer, kernel_table } from './pkg/fmnist_web.js';

const $ = (id) => document.getElementById(id);
const NAMES = {
  train_images: 'train-images-idx3-ubyte', train_labels: 'train-labels-idx1-ubyte',
  test_images: 't10k-images-idx3-ubyte', test_labels: 't10k-labels-idx1-ubyte',
};
let files = null;          // { train_images: Uint8Array, ... }
let trainer = null;
let stopRequested = false;
const curves = { trainLoss: [], valLoss: [], trainAcc: [], valAcc: [] };

function status(text, error = false) {
  $('status').textContent = text;
  $('status').className = error ? 'error' : '';
}

// ---- data -------------------------------------------------------------------------------
function matchFile(name) {
  for (const [key, stem] of Object.entries(NAMES)) if (name.startsWith(stem)) return key;
  return null;
}

async function loadFromPicker(list) {
  const got = {};
  for (const f of list) {
    const key = matchFile(f.name);
    if (key) got[key] = new Uint8Array(await f.arrayBuffer());
  }
  setFiles(got, 'the chosen files');
}

async function fetchOne(base, stem) {
  for (const name of [stem + '.gz', stem]) {
    const r = await fetch(base + name);
    if (r.ok) return new Uint8Array(await r.arrayBuffer());
  }
  throw new Error(`${base}${stem}[.gz] could not be fetched`);
}

async function loadFromUrl(base) {
  if (base && !base.endsWith('/')) base += '/';
  status(`Fetching the four files from ${base} …`);
  const got = {};
  for (const [key, stem] of Object.entries(NAMES)) got[key] = await fetchOne(base, stem);
  setFiles(got, base);
}

function setFiles(got, where) {
  const missing = Object.keys(NAMES).filter((k) => !got[k]);
  if (missing.length) {
    status(`Missing from ${where}: ${missing.map((k) => NAMES[k]).join(', ')} (raw or .gz)`, true);
    return;
  }
  files = got;
  const mb = Object.values(got).reduce((a, b) => a + b.length, 0) / 1e6;
  $('data-info').textContent = `Loaded ${mb.toFixed(1)} MB from ${where}.`;
  $('train').disabled = false;
  status('Data loaded. Choose settings and train.');
}

// ---- curves -----------------------------------------------------------------------------
function drawCurve(canvas, series, yLabel) {
  const ctx = canvas.getContext('2d');
  const W = canvas.width, H = canvas.height, L = 44, B = 22, T = 8, R = 8;
  ctx.clearRect(0, 0, W, H);
  const pts = series.flatMap((s) => s.points);
  if (!pts.length) return;
  const xmax = Math.max(1, ...pts.map((p) => p[0]));
  let ymin = Math.min(...pts.map((p) => p[1])), ymax = Math.max(...pts.map((p) => p[1]));
  if (ymax - ymin < 1e-6) { ymax += 0.5; ymin -= 0.5; }
  const X = (x) => L + (x / xmax) * (W - L - R), Y = (y) => T + (1 - (y - ymin) / (ymax - ymin)) * (H - T - B);
  ctx.strokeStyle = '#999'; ctx.fillStyle = '#444'; ctx.font = '11px sans-serif';
  ctx.beginPath(); ctx.moveTo(L, T); ctx.lineTo(L, H - B); ctx.lineTo(W - R, H - B); ctx.stroke();
  for (let i = 0; i <= 4; i++) {
    const y = ymin + (i / 4) * (ymax - ymin);
    ctx.fillText(y.toFixed(3), 2, Y(y) + 4);
  }
  ctx.fillText(`epoch (0-${xmax.toFixed(0)})   ${yLabel}`, L + 4, H - 6);
  series.forEach((s, i) => {
    ctx.strokeStyle = s.color; ctx.fillStyle = s.color; ctx.beginPath();
    s.points.forEach((p, j) => (j ? ctx.lineTo(X(p[0]), Y(p[1])) : ctx.moveTo(X(p[0]), Y(p[1]))));
    ctx.stroke();
    s.points.forEach((p) => s.dots && ctx.fillRect(X(p[0]) - 2, Y(p[1]) - 2, 4, 4));
    ctx.fillText(s.name, W - R - 90, T + 12 + 13 * i);
  });
}

function redraw() {
  drawCurve($('loss-curve'), [
    { name: 'train', color: '#1f77b4', points: curves.trainLoss },
    { name: 'validation', color: '#d62728', points: curves.valLoss, dots: true }], 'loss');
  drawCurve($('acc-curve'), [
    { name: 'train', color: '#1f77b4', points: curves.trainAcc },
    { name: 'validation', color: '#d62728', points: curves.valAcc, dots: true }], 'accuracy');
}

// ---- training ---------------------------------------------------------------------------
function flagsFromForm() {
  const f = ['--optimizer', $('optimizer').value, '--epochs', $('epochs').value,
    '--batch-size', $('batch').value, '--seed', $('seed').value];
  if ($('lr').value.trim()) f.push('--lr', $('lr').value.trim());
  if ($('limit').value.trim()) f.push('--limit', $('limit').value.trim());
  if ($('augment').checked) f.push('--augment');
  return f;
}

// Trains with `flags` (fmnist-gpu train's), updating the page; returns the epoch records.
async function train(flags) {
  if (!files) throw new Error('load the data first');
  $('train').disabled = true; $('download').disabled = true; $('stop').disabled = false;
  stopRequested = false;
  for (const k of Object.keys(curves)) curves[k] = [];
  status('Opening the GPU and building the engine …');
  if (trainer) { trainer.free(); trainer = null; }
  trainer = await Trainer.create(flags, files.train_images, files.train_labels,
    files.test_images, files.test_labels);
  const info = JSON.parse(trainer.describe());
  $('command').innerHTML = `Same run on the CLI: <code>${info.command}</code>`;
  const records = [];
  try {
    for (;;) {
      const p = JSON.parse(await trainer.train_steps(20));
      if (p.finished && !p.record) break;
      const x = p.epoch - 1 + p.step / p.steps;
      curves.trainLoss.push([x, p.train.loss]); curves.trainAcc.push([x, p.train.accuracy]);
      if (p.record) {
        records.push(p.record);
        if (info.val_images > 0) {
          curves.valLoss.push([p.epoch, p.record.val_loss]); curves.valAcc.push([p.epoch, p.record.val_accuracy]);
        }
        $('download').disabled = false;
      }
      redraw();
      $('speed').textContent = `epoch ${p.epoch}/${p.epochs}, step ${p.step}/${p.steps}: ` +
        `${p.images_per_second.toFixed(0)} images/s on ${info.adapter ? info.adapter.name : 'the GPU'}`;
      status(`Training: epoch ${p.epoch} of ${p.epochs}` + (p.record
        ? ` done, validation accuracy ${(p.record.val_accuracy * 100).toFixed(2)} %` : ''));
      if (p.finished || (p.record && stopRequested)) break;
    }
  } finally {
    $('stop').disabled = true; $('train').disabled = false;
  }
  return records;
}

async function showTest() {
  status('Evaluating the kept model on the test set …');
  const t = JSON.parse(await trainer.test_report());
  const r = t.report;
  const rows = r.classes.map((c) => `<tr><td>${c.name}</td><td>${c.precision.toFixed(4)}</td>` +
    `<td>${c.recall.toFixed(4)}</td><td>${c.f1.toFixed(4)}</td><td>${c.support}</td></tr>`).join('');
  $('test-report').innerHTML = `<p>Test accuracy <b>${(t.test_accuracy * 100).toFixed(2)} %</b>, loss ` +
    `${t.test_loss.toFixed(4)} (model of epoch ${t.model_epoch})</p><table><tr><th>class</th>` +
    `<th>precision</th><th>recall</th><th>f1</th><th>support</th></tr>${rows}</table>`;
  const m = r.confusion_matrix, max = Math.max(...m.flat());
  const head = r.classes.map((c) => `<th title="${c.name}">${c.class}</th>`).join('');
  const body = m.map((row, i) => `<tr><th>${r.classes[i].class} ${r.classes[i].name}</th>` + row.map((v) => {
    const a = (v / max) ** 0.5;
    return `<td style="background:rgba(31,119,180,${a.toFixed(3)});color:${a > 0.6 ? '#fff' : '#222'}">${v}</td>`;
  }).join('') + '</tr>').join('');
  $('confusion').innerHTML = `<p>Confusion matrix (rows: true class, columns: predicted)</p>` +
    `<table><tr><th></th>${head}</tr>${body}</table>`;
  status(`Done: test accuracy ${(t.test_accuracy * 100).toFixed(2)} %. Download the model or drop an image to classify.`);
  return t;
}

function download() {
  const bytes = trainer.model_safetensors();
  const url = URL.createObjectURL(new Blob([bytes], { type: 'application/octet-stream' }));
  const a = document.createElement('a');
  a.href = url; a.download = 'model.safetensors';
  document.body.appendChild(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

async function predict(file) {
  if (!trainer) { status('Train a model first.', true); return; }
  const bytes = new Uint8Array(await file.arrayBuffer());
  const p = JSON.parse(trainer.predict(file.name, bytes, $('invert').checked));
  const img = $('preview').getContext('2d').createImageData(28, 28);
  p.pixels.forEach((v, i) => { img.data.set([v, v, v, 255], 4 * i); });
  $('preview').getContext('2d').putImageData(img, 0, 0);
  $('prediction').innerHTML = '<table>' + p.top.slice(0, 5).map((r) =>
    `<tr><td>${r.name}</td><td>${(r.probability * 100).toFixed(1)} %</td></tr>`).join('') + '</table>';
}

// ---- self-test (index.html?selftest) -----------------------------------------------------
async function selftest(q) {
  const t0 = performance.now();
  const report = { mode: 'selftest' };
  try {
    let kt = { kernels_passed: 0, kernels_total: 0, rows_passed: 0, rows_total: 0 };
    if (!q.has('skip-table')) {
      status('Self-test: running the kernel table …');
      const [first, count] = (q.get('cases') || '0-0').split('-').map(Number);
      kt = JSON.parse(await kernel_table((i, n, k) =>
        status(`Self-test: kernel table, case ${i + 1} of ${n} (${k}) …`), first, count));
      Object.assign(report, {
        adapter: kt.adapter, kernels_passed: kt.kernels_passed, kernels_total: kt.kernels_total,
        rows_passed: kt.rows_passed, rows_total: kt.rows_total, kernel_seconds: kt.seconds,
        kernel_failures: kt.failures.map((r) => `${r.kernel} [${r.shape}] ${r.output}`),
      });
      if (kt.report) console.error(kt.report);
    }
    await loadFromUrl(q.get('data') || 'data/');
    const flags = ['--epochs', '1', '--limit', q.get('limit') || '10000', '--seed', '0'];
    report.flags = flags;
    const records = await train(flags);
    const last = records[records.length - 1];
    Object.assign(report, { val_accuracy: last.val_accuracy, train_accuracy: last.train_accuracy,
      images_per_second: last.images_per_second, epoch_seconds: last.seconds });
    const t = await showTest();
    Object.assign(report, { test_accuracy: t.test_accuracy, model_epoch: t.model_epoch });
    report.ok = !q.has('skip-table') && kt.kernels_passed === kt.kernels_total &&
      kt.rows_passed === kt.rows_total;
  } catch (e) {
    report.ok = false; report.error = String(e && e.message || e);
    status(`Self-test failed: ${report.error}`, true);
  }
  report.seconds = (performance.now() - t0) / 1000;
  $('report').textContent = JSON.stringify(report);
  $('report').dataset.done = '1';
}

// ---- wiring -----------------------------------------------------------------------------
async function main() {
  if (!navigator.gpu) {
    status('This browser has no WebGPU (navigator.gpu is missing): training needs a browser with ' +
      'WebGPU enabled, such as a current Chrome, Edge or Safari. The CLI runs without one.', true);
    $('report').textContent = JSON.stringify({ ok: false, error: 'no WebGPU in this browser' });
    $('report').dataset.done = '1';
    return;
  }
  await init();
  $('files').addEventListener('change', (e) => loadFromPicker(e.target.files).catch((x) => status(String(x), true)));
  $('load-url').addEventListener('click', () => loadFromUrl($('data-url').value).catch((x) => status(String(x), true)));
  $('train').addEventListener('click', () => train(flagsFromForm()).then(showTest).catch((x) => status(String(x && x.message || x), true)));
  $('stop').addEventListener('click', () => { stopRequested = true; $('stop').disabled = true; });
  $('download').addEventListener('click', download);
  $('image').addEventListener('change', (e) => e.target.files[0] && predict(e.target.files[0]).catch((x) => status(String(x), true)));
  const drop = $('drop');
  drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault(); drop.classList.remove('over');
    if (e.dataTransfer.files[0]) predict(e.dataTransfer.files[0]).catch((x) => status(String(x), true));
  });
  const q = new URLSearchParams(location.search);
  if (q.has('selftest')) await selftest(q);
  else status('Ready: load the data (file picker, or a same-origin URL).');
}

main().catch((e) => status(`Could not start: ${e && e.message || e}`, true));
