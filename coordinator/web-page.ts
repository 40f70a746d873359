// The page the coordinator serves at / : workers, jobs, and the selected job's loss curve, kept
// up to date by polling the HTTP API once a second (no build step, no dependencies).
export const WEB_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>lasp coordinator</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
  h1 { font-size: 1.3em; margin: 0 0 .2em; } h2 { font-size: 1.05em; margin: 1.4em 0 .4em; }
  table { border-collapse: collapse; min-width: 40em; }
  th, td { text-align: left; padding: .25em .8em .25em 0; border-bottom: 1px solid #eee; font-variant-numeric: tabular-nums; }
  tr.job { cursor: pointer; } tr.job.selected { background: #eef4ff; }
  .state-active { color: #0a6; } .state-failed { color: #c22; } .state-cancelled { color: #888; } .state-waiting { color: #a60; }
  .state-dead { color: #c22; } #status { color: #888; font-size: .9em; }
  svg { border: 1px solid #ddd; background: #fff; }
</style>
</head>
<body>
<h1>lasp coordinator</h1>
<div id="status">connecting…</div>
<h2>Workers</h2>
<table id="workers"><thead><tr><th>id</th><th>state</th><th>host</th><th>pid</th><th>job</th><th>rank</th><th>last heartbeat</th></tr></thead><tbody></tbody></table>
<h2>Jobs</h2>
<table id="jobs"><thead><tr><th>id</th><th>state</th><th>step</th><th>loss</th><th>tokens/s</th><th>ETA</th><th>workers</th><th>created</th></tr></thead><tbody></tbody></table>
<h2 id="job-title">Loss</h2>
<svg id="curve" width="720" height="300" viewBox="0 0 720 300"><g id="axes"></g><polyline id="line" fill="none" stroke="#2563eb" stroke-width="1.5" points=""></polyline></svg>
<script>
"use strict";
let selected = null;
let userSelected = false;
const $ = (s) => document.querySelector(s);
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
const num = (x, d) => (x === null || x === undefined || !isFinite(x) ? '–' : Number(x).toFixed(d));
const rate = (x) => (x === null || x === undefined ? '–' : x >= 1e6 ? (x / 1e6).toFixed(2) + 'M' : x >= 1e3 ? (x / 1e3).toFixed(1) + 'K' : x.toFixed(0));
const dur = (s) => (s === null || s === undefined ? '–' : s < 60 ? Math.round(s) + 's' : Math.floor(s / 60) + 'm' + String(Math.round(s % 60)).padStart(2, '0') + 's');
const token = new URLSearchParams(location.hash.slice(1)).get('token');
async function get(path) {
  const r = await fetch(path, { cache: 'no-store', headers: token ? { authorization: 'Bearer ' + token } : {} });
  if (!r.ok) throw new Error(path + ': ' + r.status);
  return r.json();
}
function renderWorkers(ws) {
  $('#workers tbody').innerHTML = ws.map((w) =>
    '<tr data-worker-id="' + esc(w.id) + '"><td>' + esc(w.id) + '</td><td class="state-' + esc(w.state) + '">' + esc(w.state) +
    '</td><td>' + esc(w.host) + '</td><td>' + esc(w.pid) + '</td><td>' + esc(w.job ?? '') + '</td><td>' + esc(w.rank ?? '') +
    '</td><td>' + esc(new Date(w.lastHeartbeat).toLocaleTimeString()) + '</td></tr>').join('');
}
function renderJobs(jobs) {
  if (!userSelected) {
    const pick = jobs.find((j) => j.state === 'active') ?? jobs[0];
    selected = pick ? pick.id : null;
  }
  $('#jobs tbody').innerHTML = jobs.map((j) => {
    const p = j.progress;
    return '<tr class="job' + (j.id === selected ? ' selected' : '') + '" data-job-id="' + esc(j.id) + '"><td>' + esc(j.id) +
      '</td><td class="state-' + esc(j.state) + '">' + esc(j.state) + '</td><td>' + p.step + ' / ' + p.steps + '</td><td>' + num(p.loss, 4) +
      '</td><td>' + rate(p.tokensPerSec) + '</td><td>' + dur(p.etaSeconds) + '</td><td>' + esc(p.workers.join(' ')) +
      '</td><td>' + esc(new Date(j.createdAt).toLocaleTimeString()) + '</td></tr>';
  }).join('');
}
function niceTicks(lo, hi, n) {
  const span = hi - lo || 1, raw = span / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) out.push(+v.toPrecision(12));
  return out;
}
function renderCurve(job) {
  $('#job-title').textContent = job ? 'Loss — job ' + job.id + ' (' + job.state + ')' : 'Loss';
  const pts = job ? job.metrics.filter((m) => isFinite(m.loss)) : [];
  const W = 720, H = 300, L = 50, R = 10, T = 10, B = 30;
  if (pts.length === 0) { $('#line').setAttribute('points', ''); $('#axes').innerHTML = ''; return; }
  const x0 = pts[0].step, x1 = Math.max(pts[pts.length - 1].step, x0 + 1);
  let y0 = Math.min(...pts.map((p) => p.loss)), y1 = Math.max(...pts.map((p) => p.loss));
  if (y1 - y0 < 1e-9) { y0 -= 0.5; y1 += 0.5; }
  const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R), sy = (y) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  $('#line').setAttribute('points', pts.map((p) => sx(p.step).toFixed(1) + ',' + sy(p.loss).toFixed(1)).join(' '));
  let axes = '<line x1="' + L + '" y1="' + (H - B) + '" x2="' + (W - R) + '" y2="' + (H - B) + '" stroke="#999"/>' +
    '<line x1="' + L + '" y1="' + T + '" x2="' + L + '" y2="' + (H - B) + '" stroke="#999"/>';
  for (const v of niceTicks(y0, y1, 5)) axes += '<text x="' + (L - 6) + '" y="' + (sy(v) + 4) + '" font-size="11" text-anchor="end">' + v + '</text>';
  for (const v of niceTicks(x0, x1, 6)) axes += '<text x="' + sx(v) + '" y="' + (H - B + 16) + '" font-size="11" text-anchor="middle">' + v + '</text>';
  $('#axes').innerHTML = axes;
}
async function refresh() {
  try {
    const [ws, jobs] = await Promise.all([get('/v1/workers'), get('/v1/jobs?limit=50')]);
    renderWorkers(ws);
    renderJobs(jobs);
    renderCurve(selected ? await get('/v1/jobs/' + encodeURIComponent(selected)) : null);
    $('#status').textContent = 'updated ' + new Date().toLocaleTimeString() + ' — ' + ws.length + ' workers, ' + jobs.length + ' jobs';
  } catch (e) {
    $('#status').textContent = 'cannot reach the API: ' + e.message;
  }
}
$('#jobs tbody').addEventListener('click', (ev) => {
  const tr = ev.target.closest('tr[data-job-id]');
  if (!tr) return;
  selected = tr.getAttribute('data-job-id');
  userSelected = true;
  refresh();
});
refresh();
setInterval(refresh, 1000);
</script>
</body>
</html>
`;
