"""The interactive viewer: one self-contained HTML page per image (no server, no network) with the
image, the K+1 overlay, the score heat map, a threshold slider that redraws the K+1 map in the
browser, per-class toggles, the suggested regions, and the pixel under the cursor (its class,
score and, for a hyperspectral cube, its spectrum; false-colour bands chosen on the page).

Arrays travel as PNGs inside the page (lossless, decoded by the browser's own image decoder), and
are quantised to 8 bits to keep it small:

* scores, per layer, on 255 steps of ``(max - min) / 255`` placed so that the threshold falls on
  a step's edge: a pixel is OOD on the page at level ``L`` where its quantised score is below
  ``L``, and at the layer's own level exactly where its score is below the threshold (the page's
  K+1 map is the model's); other levels move the threshold by whole steps;
* a cube's bands, on one scale for all bands (its 0.5th to 99.5th percentile), tiled into one
  grey image: a spectrum keeps its shape.

No JavaScript library earns its place here: canvas drawing and an ``input`` event are all it takes.
"""

from __future__ import annotations

import base64
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from oodseg.figures import class_colours
from oodseg.io import atomic_path
from oodseg.progress import Stages, track
from oodseg.suggest import Region, regions_json

LEVELS = 256


@dataclass
class Layer:
    """One model's maps of the image (a cross-validation fold, or a trained bundle)."""

    label: str
    classes: np.ndarray  # (H, W) arg-max class, the data set's ids 1..K
    scores: np.ndarray  # (H, W) ID-ness scores
    threshold: float
    known: tuple[int, ...] | None = None  # the class ids the model knows (None: all)
    regions: list[Region] = field(default_factory=list)
    annotated: np.ndarray | None = None  # (H, W) the strokes it learnt from (class ids)


@dataclass
class Picture:
    """The image as the page shows it: ``rgb`` (H, W, 3) uint8 and, for more than three bands,
    the cube on one 8-bit scale (``cube`` (H, W, C) uint8 spanning ``lo`` to ``hi``) with the
    bands first shown as red, green and blue."""

    rgb: np.ndarray
    cube: np.ndarray | None = None
    lo: float = 0.0
    hi: float = 1.0
    bands: tuple[int, int, int] = (0, 1, 2)

    @classmethod
    def of(
        cls, image: np.ndarray, rgb: np.ndarray, bands: tuple[int, int, int] | None = None
    ) -> Picture:
        """The picture of a raw (H, W, C) image and its RGB view."""
        rgb = np.ascontiguousarray(rgb, np.uint8)
        c = image.shape[-1]
        if c <= 3:
            return cls(rgb)
        step = max(1, image.size // 2_000_000)
        lo, hi = np.percentile(np.asarray(image, np.float32).ravel()[::step], [0.5, 99.5])
        hi = hi if hi > lo else lo + 1
        cube = np.empty(image.shape, np.uint8)
        for b in range(c):  # band by band: a float copy of the whole cube is not needed
            band = np.asarray(image[..., b], np.float32)
            cube[..., b] = np.clip(np.round((band - lo) / (hi - lo) * 255), 0, 255)
        bands = bands or tuple(int(c * f) for f in (0.75, 0.5, 0.25))
        return cls(rgb, cube, float(lo), float(hi), bands)


def quantise(scores: np.ndarray, threshold: float) -> tuple[np.ndarray, int, float]:
    """8-bit scores (H, W) uint8, the threshold's level ``L`` (OOD: below ``L``) and the step:
    level ``q`` covers scores in ``[threshold + (q - L) * step, threshold + (q - L + 1) * step)``
    (the first and last levels open-ended)."""
    finite = scores[np.isfinite(scores)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    step = (hi - lo) / (LEVELS - 1) if hi > lo else 1.0
    level = int(np.clip(round((threshold - lo) / step), 1, LEVELS - 1))
    with np.errstate(invalid="ignore"):
        q = np.floor((np.nan_to_num(scores, nan=lo) - threshold) / step) + level
    return np.clip(q, 0, LEVELS - 1).astype(np.uint8), level, step


def ood_count(layer: Layer, level: int | None = None) -> int:
    """Pixels the page draws as OOD for ``layer`` at slider ``level`` (default: the threshold's):
    what the browser test compares the page with."""
    q, at, _ = quantise(layer.scores, layer.threshold)
    return int((q < (at if level is None else level)).sum())


def _png(array: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _atlas(cube: np.ndarray) -> tuple[np.ndarray, int]:
    """The bands of an (H, W, C) uint8 cube tiled into one grey image, ``columns`` per row."""
    h, w, c = cube.shape
    columns = math.ceil(math.sqrt(c))
    atlas = np.zeros((math.ceil(c / columns) * h, columns * w), np.uint8)
    for b in range(c):
        y, x = divmod(b, columns)
        atlas[y * h : (y + 1) * h, x * w : (x + 1) * w] = cube[..., b]
    return atlas, columns


def page(
    name: str, picture: Picture, class_names: tuple[str, ...], layers: list[Layer], title: str = ""
) -> str:
    """The viewer page of one image and the maps of one or more models of it."""
    h, w = picture.rgb.shape[:2]
    if not layers:
        raise ValueError(f"{name}: no model's maps to show")
    for layer in layers:
        if layer.scores.shape != (h, w) or layer.classes.shape != (h, w):
            raise ValueError(f"{name}: maps of {layer.label!r} differ in size from the image")
    data: dict = {
        "name": name,
        "title": title or name,
        "height": h,
        "width": w,
        "classes": list(class_names),
        "colours": (class_colours(len(class_names)) * 255).round().astype(int).tolist(),
        "rgb": _png(picture.rgb),
        "layers": [],
    }
    if picture.cube is not None:
        atlas, columns = _atlas(picture.cube)
        data["cube"] = {
            "png": _png(atlas),
            "bands": picture.cube.shape[-1],
            "columns": columns,
            "lo": picture.lo,
            "hi": picture.hi,
            "rgb": list(picture.bands),
        }
    for layer in layers:
        q, level, step = quantise(layer.scores, layer.threshold)
        ann = layer.annotated
        data["layers"].append(
            {
                "label": layer.label,
                "scores": _png(q),
                "classes": _png(np.asarray(layer.classes, np.uint8)),
                "annotated": None if ann is None else _png(np.asarray(ann, np.uint8)),
                "threshold": float(layer.threshold),
                "level": level,
                "step": float(step),
                "known": [int(k) for k in layer.known or range(1, len(class_names) + 1)],
                "regions": regions_json(layer.regions),
            }
        )
    payload = json.dumps(data).replace("</", "<\\/")
    return _TEMPLATE.replace("__TITLE__", _escape(data["title"])).replace("__DATA__", payload)


def write_page(path: Path, html: str) -> Path:
    """Write a viewer page atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(html)
    return path


# A run folder keeps what its pages need in viewer/<image>/: picture.npz once, and one NPZ per
# model (fold) that drew the image; `oodseg report` turns each folder into viewer/<image>.html.
# Arrays and JSON text only: read back without unpickling.


def _folder(out: Path, name: str) -> Path:
    return out / "viewer" / "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def save_picture(out: Path, name: str, picture: Picture, class_names: tuple[str, ...]) -> None:
    """Keep an image's picture for its page (once: the folds of a run share it)."""
    path = _folder(out, name) / "picture.npz"
    if path.is_file():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"name": name, "classes": list(class_names), "lo": picture.lo, "hi": picture.hi,
            "bands": list(picture.bands)}  # fmt: skip
    arrays = {"rgb": picture.rgb, "meta": np.array(json.dumps(meta))}
    if picture.cube is not None:
        arrays["cube"] = picture.cube
    with atomic_path(path) as tmp:
        np.savez_compressed(tmp, **arrays)


def save_layer(out: Path, name: str, key: str, layer: Layer) -> None:
    """Keep one model's maps of an image for its page, under ``key`` (pages order layers by it)."""
    path = _folder(out, name) / f"{key}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"label": layer.label, "threshold": float(layer.threshold),
            "known": None if layer.known is None else [int(k) for k in layer.known],
            "regions": regions_json(layer.regions)}  # fmt: skip
    arrays = {"classes": layer.classes, "scores": layer.scores, "meta": np.array(json.dumps(meta))}
    if layer.annotated is not None:
        arrays["annotated"] = layer.annotated
    with atomic_path(path) as tmp:
        np.savez_compressed(tmp, **arrays)


def _read_kept(folder: Path) -> tuple[Picture, dict, list[Layer]]:
    """The picture, its description and the models' layers kept in one image's folder."""
    with np.load(folder / "picture.npz", allow_pickle=False) as f:
        meta = json.loads(str(f["meta"]))
        picture = Picture(
            f["rgb"],
            f["cube"] if "cube" in f else None,
            meta["lo"],
            meta["hi"],
            tuple(meta["bands"]),
        )
    layers = []
    for path in sorted(folder.glob("*.npz")):
        if path.name == "picture.npz":
            continue
        with np.load(path, allow_pickle=False) as f:
            m = json.loads(str(f["meta"]))
            layers.append(
                Layer(
                    m["label"],
                    f["classes"],
                    f["scores"],
                    m["threshold"],
                    None if m["known"] is None else tuple(m["known"]),
                    [
                        Region(
                            **{
                                **r,
                                "centroid": tuple(r["centroid"]),
                                "anchor": tuple(r["anchor"]),
                                "bbox": tuple(r["bbox"]),
                            }
                        )
                        for r in m["regions"]
                    ],
                    f["annotated"] if "annotated" in f else None,
                )
            )
    return picture, meta, layers


def write_pages(out: Path, progress: Stages | None = None) -> list[Path]:
    """``viewer/<image>.html`` for every image whose picture and maps a run kept."""
    pages = []
    folders = sorted(p for p in (out / "viewer").glob("*") if p.is_dir())
    for folder in track(folders, progress, "writing the viewer pages"):
        try:
            picture, meta, layers = _read_kept(folder)
        except (OSError, ValueError, KeyError) as e:
            raise ValueError(
                f"{folder}: unreadable viewer data ({e}); delete this folder or rerun the "
                "crossval / evaluate that wrote it"
            ) from None
        if layers:
            html = page(meta["name"], picture, tuple(meta["classes"]), layers)
            pages.append(write_page(out / "viewer" / f"{folder.name}.html", html))
    return pages


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_TEMPLATE = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>__TITLE__</title><style>
body{font-family:sans-serif;margin:1em;color:#222}
#views{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0}figcaption{font-size:.85em;color:#555}
canvas{image-rendering:pixelated;border:1px solid #ccc;cursor:crosshair}
#controls{margin:.6em 0;display:flex;flex-wrap:wrap;gap:1.2em;align-items:center}
#classes label{margin-right:.8em;white-space:nowrap}
.swatch{display:inline-block;width:.9em;height:.9em;margin-right:.25em;vertical-align:middle}
#info{font-family:monospace;min-height:1.4em}
input[type=number]{width:4em}
</style></head><body>
<h2 id="title"></h2>
<div id="controls">
 <label>model <select id="layer"></select></label>
 <label>threshold <input id="level" type="range" min="0" max="256" step="1">
  <span id="threshold"></span></label>
 <span>OOD pixels: <b id="ood-count"></b> (<span id="ood-share"></span>)</span>
 <label><input id="show-regions" type="checkbox" checked> suggested regions</label>
 <label><input id="show-strokes" type="checkbox"> annotations</label>
 <span id="band-picker" hidden>bands R <input id="band-r" type="number" min="0">
  G <input id="band-g" type="number" min="0"> B <input id="band-b" type="number" min="0"></span>
</div>
<div id="classes"></div>
<div id="views">
 <figure><canvas id="image"></canvas><figcaption>image</figcaption></figure>
 <figure><canvas id="kmap"></canvas><figcaption>K+1 map (OOD grey)</figcaption></figure>
 <figure><canvas id="heat"></canvas><figcaption>ID-ness score (dark: OOD-like)</figcaption>
 </figure>
 <figure id="spectrum-box" hidden><canvas id="spectrum" width="360" height="200"></canvas>
  <figcaption>spectrum under the cursor</figcaption></figure>
</div>
<p id="info">move the cursor over an image</p>
<script id="data" type="application/json">__DATA__</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const W = D.width, H = D.height, N = W * H;
const $ = id => document.getElementById(id);
window.addEventListener("error", e => {
  document.body.dataset.errors = (+(document.body.dataset.errors || 0) + 1);
  console.error(e.message);
});
function decode(uri) {
  return new Promise((ok, fail) => {
    const img = new Image();
    img.onload = () => {
      const c = document.createElement("canvas");
      c.width = img.width; c.height = img.height;
      const g = c.getContext("2d");
      g.drawImage(img, 0, 0);
      const rgba = g.getImageData(0, 0, img.width, img.height).data;
      const out = new Uint8Array(img.width * img.height);
      for (let i = 0; i < out.length; i++) out[i] = rgba[4 * i];
      ok({rgba, grey: out, width: img.width, height: img.height});
    };
    img.onerror = () => fail(new Error("could not decode an embedded image"));
    img.src = uri;
  });
}
// Small images are enlarged by whole pixels, large ones shrunk to fit three views side by side.
const fit = 460 / Math.max(W, H), scale = fit >= 1 ? Math.min(4, Math.floor(fit)) : fit;
for (const id of ["image", "kmap", "heat"]) {
  const c = $(id); c.width = W; c.height = H;
  c.style.width = W * scale + "px"; c.style.height = H * scale + "px";
}
const state = {layer: 0, level: 0, shown: D.classes.map(() => true), ood: true};
let base, cube = null, layers = [];
function stretch(band) {
  const v = new Float32Array(N);
  const cols = cube.columns, y0 = Math.floor(band / cols) * H, x0 = (band % cols) * W;
  for (let y = 0; y < H; y++) for (let x = 0; x < W; x++)
    v[y * W + x] = cube.px.grey[(y0 + y) * cube.px.width + x0 + x];
  const s = Array.from(v).sort((a, b) => a - b);
  const lo = s[Math.floor(0.02 * (N - 1))], hi = s[Math.floor(0.98 * (N - 1))];
  return v.map(t => Math.max(0, Math.min(255, (t - lo) / Math.max(hi - lo, 1) * 255)));
}
function falseColour() {
  const [r, g, b] = ["band-r", "band-g", "band-b"].map(id => {
    const v = Math.max(0, Math.min(cube.bands - 1, Math.round(+$(id).value || 0)));
    $(id).value = v; return stretch(v);
  });
  const out = new Uint8ClampedArray(4 * N);
  for (let i = 0; i < N; i++) {
    out[4 * i] = r[i]; out[4 * i + 1] = g[i]; out[4 * i + 2] = b[i]; out[4 * i + 3] = 255;
  }
  return out;
}
function put(id, pixels) {
  const g = $(id).getContext("2d");
  g.putImageData(new ImageData(pixels, W, H), 0, 0);
  return g;
}
function heatColour(t) {  // dark blue (OOD-like) to yellow (ID-like)
  const stops = [[48, 18, 59], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  const u = Math.max(0, Math.min(1, t)) * (stops.length - 1), i = Math.min(2, Math.floor(u));
  const f = u - i;
  return stops[i].map((a, k) => a + f * (stops[i + 1][k] - a));
}
function draw() {
  const L = layers[state.layer], meta = D.layers[state.layer], level = state.level;
  $("show-strokes").disabled = !L.annotated;
  const k = new Uint8ClampedArray(4 * N), heat = new Uint8ClampedArray(4 * N);
  let ood = 0;
  for (let i = 0; i < N; i++) {
    const q = L.scores[i], c = L.classes[i], r = base[4 * i], g = base[4 * i + 1],
      b = base[4 * i + 2];
    let out = [r, g, b];
    if (q < level) {
      ood++;
      if (state.ood) out = [0.35 * r + 102, 0.35 * g + 102, 0.35 * b + 102];
    } else if (c >= 1 && c <= D.classes.length && state.shown[c - 1]) {
      const col = D.colours[c];
      out = [0.5 * r + 0.5 * col[0], 0.5 * g + 0.5 * col[1], 0.5 * b + 0.5 * col[2]];
    }
    const a = L.annotated ? L.annotated[i] : 0;
    if (a && a <= D.classes.length && $("show-strokes").checked) out = D.colours[a];
    k[4 * i] = out[0]; k[4 * i + 1] = out[1]; k[4 * i + 2] = out[2]; k[4 * i + 3] = 255;
    const hc = heatColour(q / 255);
    heat[4 * i] = hc[0]; heat[4 * i + 1] = hc[1]; heat[4 * i + 2] = hc[2]; heat[4 * i + 3] = 255;
  }
  const g = put("kmap", k);
  put("heat", heat);
  if ($("show-regions").checked) {
    g.lineWidth = Math.max(1, Math.round(Math.max(W, H) / 300));
    g.font = `bold ${Math.max(9, Math.round(Math.max(W, H) / 40))}px sans-serif`;
    for (const r of meta.regions) {
      const [y0, x0, y1, x1] = r.bbox;
      g.strokeStyle = r.reason === "class" ? "#ff00ff" : "#00e5ff";
      g.strokeRect(x0 + 0.5, y0 + 0.5, x1 - x0 - 1, y1 - y0 - 1);
      g.fillStyle = "#fff"; g.fillText(String(r.rank), r.anchor[1], r.anchor[0]);
    }
  }
  const t = meta.threshold + (level - meta.level) * meta.step;
  $("threshold").textContent = level === meta.level ? `${meta.threshold.toPrecision(4)} (the model's)`
    : `${t.toPrecision(4)}`;
  $("ood-count").textContent = ood;
  $("ood-share").textContent = (100 * ood / N).toFixed(1) + " %";
  document.body.dataset.ood = ood;
  document.body.dataset.level = level;
}
function scoreOf(q, meta) {
  return q === 0 ? `< ${(meta.threshold + (1 - meta.level) * meta.step).toPrecision(4)}` :
    q === 255 ? `>= ${(meta.threshold + (255 - meta.level) * meta.step).toPrecision(4)}` :
    (meta.threshold + (q - meta.level + 0.5) * meta.step).toPrecision(4);
}
function hover(ev) {
  const rect = ev.target.getBoundingClientRect();
  const x = Math.floor((ev.clientX - rect.left) / scale), y = Math.floor((ev.clientY - rect.top) / scale);
  if (x < 0 || y < 0 || x >= W || y >= H) return;
  const i = y * W + x, L = layers[state.layer], meta = D.layers[state.layer];
  const c = L.classes[i], ood = L.scores[i] < state.level;
  $("info").textContent = `(y ${y}, x ${x})  ${ood ? "OOD" : D.classes[c - 1]}` +
    `  (arg-max ${D.classes[c - 1]})  score ${scoreOf(L.scores[i], meta)}`;
  if (!cube) return;
  const g = $("spectrum").getContext("2d"), w = 360, h = 200, cols = cube.columns;
  g.clearRect(0, 0, w, h); g.strokeStyle = "#333"; g.beginPath();
  for (let b = 0; b < cube.bands; b++) {
    const v = cube.px.grey[(Math.floor(b / cols) * H + y) * cube.px.width + (b % cols) * W + x];
    const px = 30 + b / Math.max(1, cube.bands - 1) * (w - 40), py = h - 20 - v / 255 * (h - 30);
    b ? g.lineTo(px, py) : g.moveTo(px, py);
  }
  g.stroke(); g.fillStyle = "#555"; g.font = "11px sans-serif";
  g.fillText(`band 0..${cube.bands - 1}`, 30, h - 5);
  g.fillText(cube.hi.toPrecision(3), 0, 12); g.fillText(cube.lo.toPrecision(3), 0, h - 20);
}
async function main() {
  $("title").textContent = D.title;
  const rgb = await decode(D.rgb);
  base = rgb.rgba;
  if (D.cube) {
    cube = {...D.cube, px: await decode(D.cube.png)};
    $("band-picker").hidden = false; $("spectrum-box").hidden = false;
    ["band-r", "band-g", "band-b"].forEach((id, j) => {
      $(id).max = cube.bands - 1; $(id).value = cube.rgb[j];
      $(id).addEventListener("change", () => { base = falseColour(); put("image", base); draw(); });
    });
  }
  for (const meta of D.layers) {
    const [s, c] = await Promise.all([decode(meta.scores), decode(meta.classes)]);
    const a = meta.annotated ? (await decode(meta.annotated)).grey : null;
    layers.push({scores: s.grey, classes: c.grey, annotated: a});
    const o = document.createElement("option");
    o.value = layers.length - 1; o.textContent = meta.label; $("layer").appendChild(o);
  }
  const classLabels = D.classes.map((name, j) => {
    const l = document.createElement("label"), box = document.createElement("input");
    box.type = "checkbox"; box.checked = true;
    box.addEventListener("change", () => { state.shown[j] = box.checked; draw(); });
    const sw = document.createElement("span"); sw.className = "swatch";
    sw.style.background = `rgb(${D.colours[j + 1].join(",")})`;
    l.append(box, sw, name); $("classes").appendChild(l);
    return l;
  });
  const l = document.createElement("label"), box = document.createElement("input");
  box.type = "checkbox"; box.checked = true;
  box.addEventListener("change", () => { state.ood = box.checked; draw(); });
  const sw = document.createElement("span"); sw.className = "swatch"; sw.style.background = "#888";
  l.append(box, sw, "OOD"); $("classes").appendChild(l);
  const hash = new URLSearchParams(location.hash.slice(1));
  state.layer = Math.min(D.layers.length - 1, Math.max(0, +(hash.get("layer") || 0)));
  $("layer").value = state.layer;
  const setLayer = () => {
    state.layer = +$("layer").value; state.level = D.layers[state.layer].level;
    classLabels.forEach((l, j) => {  // a class this model never learnt (held out) is dimmed
      const known = D.layers[state.layer].known.includes(j + 1);
      l.style.opacity = known ? 1 : 0.4; l.title = known ? "" : "not known to this model";
    });
    $("level").value = state.level; draw();
  };
  $("layer").addEventListener("change", setLayer);
  $("level").addEventListener("input", () => { state.level = +$("level").value; draw(); });
  ["show-regions", "show-strokes"].forEach(id => $(id).addEventListener("change", draw));
  for (const id of ["image", "kmap", "heat"]) $(id).addEventListener("mousemove", hover);
  if (cube) base = falseColour();
  put("image", base);
  setLayer();
  if (hash.has("level")) {  // a link (or a test) can open the page at a threshold level
    const el = $("level"); el.value = hash.get("level");
    el.dispatchEvent(new Event("input"));
  }
  document.body.dataset.ready = "1";
}
main().catch(e => { document.body.dataset.errors = "main: " + e.message; console.error(e); });
</script></body></html>
"""
