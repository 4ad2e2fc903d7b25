"""The page at `/`: pick a model, upload an image, see the prediction drawn by the server.

Static (no model data in it); it lists models through `/v2/models` and posts the raw image to
`/predictions/{model}?render=1`, sending the bearer token when one is typed in.
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>vdeploy</title>
<style>
 body { font-family: sans-serif; margin: 2em; max-width: 70em; }
 label { margin-right: 1em; }
 #status { margin: 1em 0; color: #444; }
 #status.error { color: #b00; }
 img { max-width: 100%; border: 1px solid #ccc; }
</style>
</head>
<body>
<h1>vdeploy</h1>
<form id="form">
 <label>Model <select id="model"></select></label>
 <label>Image <input id="file" type="file" accept="image/*"></label>
 <label>Token <input id="token" type="password" placeholder="only with --token"></label>
 <button id="run" type="submit">Predict</button>
</form>
<div id="status">Choose an image.</div>
<img id="result" alt="">
<script>
const $ = (id) => document.getElementById(id);
function authHeaders() {
  const t = $("token").value.trim();
  return t ? {"Authorization": "Bearer " + t} : {};
}
function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}
async function loadModels() {
  const r = await fetch("v2/models", {headers: authHeaders()});
  if (!r.ok) { setStatus("cannot list models (" + r.status + ")", true); return; }
  const names = (await r.json()).models || [];
  $("model").replaceChildren(...names.map((n) => new Option(n, n)));
}
$("token").addEventListener("change", loadModels);
$("form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const file = $("file").files[0];
  if (!file) { setStatus("Choose an image first.", true); return; }
  setStatus("Predicting...", false);
  const started = performance.now();
  const r = await fetch("predictions/" + encodeURIComponent($("model").value) + "?render=1",
                        {method: "POST", body: file, headers: authHeaders()});
  if (!r.ok) {
    let msg = r.status + "";
    try { msg += ": " + (await r.json()).error; } catch (e) {}
    setStatus("Error " + msg, true);
    return;
  }
  const blob = await r.blob();
  $("result").onload = () => setStatus("Done in " + Math.round(performance.now() - started) + " ms; " +
                                       (r.headers.get("X-Vdeploy-Summary") || ""), false);
  $("result").src = URL.createObjectURL(blob);
});
loadModels();
</script>
</body>
</html>
"""
