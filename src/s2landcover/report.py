"""The evaluation report: one self-contained HTML page (figures embedded as base64 PNG).

:func:`report_html` builds the page from the ``metrics.json`` content and the PNG bytes of the
figures; it opens no file (the stage writes it with :mod:`s2landcover.io.evaluation_io`). The page
opens in any browser, offline, and can be mailed or archived as one file.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

KEY_AREAS = ("val", "test", "train", "whole_scene")
TABLE_AREAS = ("val", "test", "whole_scene")
AREA_TITLES = {
    "val": "Validation area",
    "test": "Test area",
    "train": "Training area",
    "whole_scene": "Whole scene (includes training areas)",
}
FIGURE_CAPTIONS = {
    "baselines.png": "IoU per class and mIoU of the model beside the pixel baseline and the "
    "majority class, on the same pixels of the validation and test areas.",
    "confusion_matrix.png": "Confusion matrices normalised by reference class (rows sum to 1).",
    "training_curves.png": "Training curves: losses, validation mIoU and accuracy, IoU per class.",
    "samples.png": "Sample chips: Sentinel-2 true colour (B04, B03, B02; 2-98 % stretch) | "
    "ground truth | prediction, in the class colours of the config.",
}
WHOLE_SCENE_NOTE = (
    "Whole-scene figures include the training areas, where the model has seen the labels: they "
    "are optimistic. Judge the model by the validation and test areas (the union of the chip "
    "windows of those splits, each pixel counted once)."
)
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1500px; padding: 0 1em;
  color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f2f2f2; }
td.name, th.name { text-align: left; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; border: 1px solid #555;
  margin-right: 0.4em; vertical-align: middle; }
.note { background: #fff6d6; border-left: 4px solid #e0b000; padding: 0.6em 1em; }
.warning { background: #fde2dd; border-left-color: #c0392b; }
td.baseline { color: #555; background: #f8f8f8; }
.absent { color: #a33; font-size: 0.85em; }
figure { margin: 1em 0 2em; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { color: #555; font-size: 0.9em; }
"""


def _number(value: Any, percent: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "&ndash;"
    if percent:
        return f"{100 * value:.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.3f}"


BASELINE_TITLES = {"pixel": "pixel baseline", "majority": "majority class"}


def _baseline_area(
    baselines: Mapping[str, Any] | None, name: str, area: str
) -> Mapping[str, Any] | None:
    """Metrics of baseline ``name`` in ``area``, or None when that baseline was not run."""
    if not baselines or name not in baselines:
        return None
    return baselines[name].get("areas", {}).get(area)


def key_numbers_table(
    areas: Mapping[str, Mapping[str, Any]], baselines: Mapping[str, Any] | None = None
) -> str:
    """HTML table: mIoU, overall accuracy, mean F1 and pixel count per area, and beside them the
    mIoU and overall accuracy of each baseline (``baselines`` of metrics.json) on the same pixels.
    An area without pixels shows its ``empty_reason`` instead of dashes."""
    shown = [b for b in BASELINE_TITLES if baselines and baselines.get(b, {}).get("areas")]
    head = "".join(
        f"<th>{BASELINE_TITLES[b]} mIoU</th><th>{BASELINE_TITLES[b]} accuracy</th>" for b in shown
    )
    rows = [
        "<tr><th class='name'>area</th><th>mIoU</th><th>overall accuracy</th><th>mean F1</th>"
        f"<th>pixels</th>{head}</tr>"
    ]
    for area in KEY_AREAS:
        if area not in areas:
            continue
        m = areas[area]
        title = f"<td class='name'>{escape(AREA_TITLES.get(area, area))}</td>"
        if m.get("pixels") == 0 and m.get("empty_reason"):
            rows.append(
                f"<tr>{title}<td class='empty' colspan='{4 + 2 * len(shown)}'>"
                f"no pixels: {escape(m['empty_reason'])}</td></tr>"
            )
            continue
        cells = ""
        for b in shown:
            bm = _baseline_area(baselines, b, area) or {}
            cells += (
                f"<td class='baseline'>{_number(bm.get('miou'))}</td>"
                f"<td class='baseline'>{_number(bm.get('overall_accuracy'))}</td>"
            )
        rows.append(
            f"<tr>{title}<td>{_number(m['miou'])}</td>"
            f"<td>{_number(m['overall_accuracy'])}</td><td>{_number(m['mean_f1'])}</td>"
            f"<td>{_number(m['pixels'])}</td>{cells}</tr>"
        )
    return "<table>" + "".join(rows) + "</table>"


def baselines_note(baselines: Mapping[str, Any] | None) -> str:
    """What the baselines are (HTML paragraph)."""
    if not baselines:
        return ""
    parts = []
    majority = baselines.get("majority", {})
    if majority.get("class"):
        parts.append(
            f"<b>majority class</b>: always predict {escape(majority['class'])}, the most "
            f"frequent class of the training chips ({100 * majority['training_share']:.1f} % of "
            "their labelled pixels)"
        )
    pixel = baselines.get("pixel", {})
    parts.append(f"<b>pixel baseline</b>: {escape(pixel.get('description', 'not run'))}")
    return (
        "<p>Baselines, scored on the same pixels as the model: "
        + "; ".join(parts)
        + ". A model that does not beat them has not learnt what the data offer.</p>"
    )


def per_class_table(
    area_metrics: Mapping[str, Any],
    colors: Sequence[str],
    baselines: Mapping[str, Mapping[str, Any] | None] | None = None,
) -> str:
    """HTML table of IoU, F1, precision, recall, reference and predicted pixels per class, with
    the IoU of each baseline (``baselines``: name -> that baseline's metrics in the same area);
    classes without reference pixels in the area are marked absent. An area without pixels gives
    its ``empty_reason`` (when known) instead of a table."""
    if area_metrics.get("pixels") == 0 and area_metrics.get("empty_reason"):
        return f"<p class='note'>No pixels: {escape(area_metrics['empty_reason'])}.</p>"
    shown = {b: m for b, m in (baselines or {}).items() if m}
    head = "".join(f"<th>{BASELINE_TITLES.get(b, b)} IoU</th>" for b in shown)
    rows = [
        "<tr><th class='name'>class</th><th>IoU</th><th>F1 / Dice</th><th>precision</th>"
        "<th>recall</th>"
        f"<th>reference px</th><th>predicted px</th>{head}</tr>"
    ]
    for i, (name, m) in enumerate(area_metrics["per_class"].items()):
        color = colors[i] if i < len(colors) else "#808080"
        absent = m.get("absent", m["support"] == 0)
        mark = " <span class='absent'>(absent from this area)</span>" if absent else ""
        cells = "".join(
            f"<td class='baseline'>{_number(b['per_class'][name]['iou'])}</td>"
            for b in shown.values()
        )
        rows.append(
            f"<tr><td class='name'><span class='swatch' style='background:{escape(color)}'></span>"
            f"{m['index']} {escape(name)}{mark}</td><td>{_number(m['iou'])}</td>"
            f"<td>{_number(m['f1'])}</td>"
            f"<td>{_number(m['precision'])}</td><td>{_number(m['recall'])}</td>"
            f"<td>{_number(m['support'])}</td><td>{_number(m['predicted'])}</td>{cells}</tr>"
        )
    means = "".join(f"<th>{_number(b['miou'])}</th>" for b in shown.values())
    rows.append(
        f"<tr><th class='name'>mean of present classes</th><th>{_number(area_metrics['miou'])}</th>"
        f"<th>{_number(area_metrics['mean_f1'])}</th><th></th><th></th>"
        f"<th>{_number(area_metrics['pixels'])}</th><th></th>{means}</tr>"
    )
    accuracy = _number(area_metrics["overall_accuracy"])
    beside = "".join(
        f"; {BASELINE_TITLES.get(b, b)} {_number(m['overall_accuracy'])}" for b, m in shown.items()
    )
    return "<table>" + "".join(rows) + f"</table><p>Overall accuracy: {accuracy}{beside}</p>"


def per_scene_table(scenes: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    """HTML table of mIoU and overall accuracy per scene and area."""
    header = "".join(f"<th>{escape(AREA_TITLES[a])} mIoU</th><th>OA</th>" for a in TABLE_AREAS)
    rows = [f"<tr><th class='name'>scene</th>{header}</tr>"]
    for scene, areas in scenes.items():
        cells = "".join(
            f"<td>{_number(areas[a]['miou'])}</td><td>{_number(areas[a]['overall_accuracy'])}</td>"
            for a in TABLE_AREAS
            if a in areas
        )
        rows.append(f"<tr><td class='name'>{escape(scene)}</td>{cells}</tr>")
    return "<table>" + "".join(rows) + "</table>"


def clouds_section(clouds: Mapping[str, Any] | None) -> str:
    """HTML: each scene's cloud fraction and its source, or that clouds were not screened."""
    if not clouds or not clouds.get("scenes"):
        return "<p class='note'>Clouds were not screened (validity.source: none).</p>"
    rows = [
        "<tr><th class='name'>scene</th><th class='name'>source</th><th>cloud fraction %</th>"
        "<th>predicted Not observed px</th><th>reference px left out</th></tr>"
    ]
    for scene, info in clouds["scenes"].items():
        source = info.get("source", "none")
        fraction = info.get("cloud_fraction") if info.get("screened") else None
        rows.append(
            f"<tr><td class='name'>{escape(scene)}</td><td class='name'>{escape(source)}"
            f"{'' if info.get('screened') else ' (not screened)'}</td>"
            f"<td>{_number(fraction, percent=True)}</td>"
            f"<td>{_number(info.get('not_observed_pixels'))}</td>"
            f"<td>{_number(info.get('excluded_reference_pixels'))}</td></tr>"
        )
    note = (
        "Cloud fraction: cloud, cloud shadow and cirrus pixels of the validity raster over the "
        "scene's pixels with data. Those pixels are left out of every metric above and predicted "
        "as Not observed (255)."
    )
    if not clouds.get("screened"):
        note += " Clouds were not screened in the scenes marked so: their metrics include clouds."
    return "<table>" + "".join(rows) + f"</table><p>{escape(note)}</p>"


def _list(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def provenance_section(provenance: Mapping[str, Any] | None) -> str:
    """HTML: what made the maps (``provenance`` of metrics.json, see
    :mod:`s2landcover.provenance`): config digest, package versions, git commit, bands, epochs,
    scene dates, time per stage, and the config itself (folded)."""
    if not provenance:
        return "<p class='note'>No provenance recorded.</p>"
    model = provenance.get("model", {})
    epochs = model.get("epochs_trained", "unknown")
    if provenance.get("epochs_configured") is not None:
        epochs = f"{epochs} of {provenance['epochs_configured']} configured"
    if model.get("best_epoch") is not None:
        epochs = f"{epochs}; model.pt from epoch {model['best_epoch']}"
    rows = [
        ("config SHA-256", f"<code>{escape(str(provenance.get('config_sha256')))}</code>"),
        ("git commit", f"<code>{escape(str(provenance.get('git_commit')))}</code>"),
        (
            "model",
            escape(
                " / ".join(str(model[k]) for k in ("architecture", "encoder") if k in model)
                or "unknown"
            ),
        ),
        ("bands", escape(_list(provenance.get("bands", "unknown")))),
        ("epochs trained", escape(str(epochs))),
        (
            "scene dates",
            escape(
                "; ".join(
                    f"{scene}: {date}" for scene, date in provenance.get("scene_dates", {}).items()
                )
                or "unknown"
            ),
        ),
        (
            "packages",
            escape(
                ", ".join(
                    f"{name} {version}" for name, version in provenance.get("packages", {}).items()
                )
            ),
        ),
    ]
    table = (
        "<table>"
        + "".join(
            f"<tr><th class='name'>{escape(k)}</th><td class='name'>{v}</td></tr>" for k, v in rows
        )
        + "</table>"
    )
    times = provenance.get("stage_times") or []
    if times:
        time_rows = "".join(
            f"<tr><td class='name'>{escape(t['stage'])}</td><td class='name'>{escape(t['job'])}"
            f"</td><td>{t['seconds']:.1f}</td></tr>"
            for t in times
        )
        table += (
            "<p>Time per stage (Snakemake benchmark files, wall-clock seconds of the last run of "
            "each job):</p><table><tr><th class='name'>stage</th><th class='name'>job</th>"
            f"<th>seconds</th></tr>{time_rows}</table>"
        )
    else:
        table += "<p>Time per stage: no Snakemake benchmark files (run outside the workflow).</p>"
    config = json.dumps(provenance.get("config", {}), indent=2, sort_keys=True, default=str)
    return (
        table
        + "<details><summary>The config of this evaluation (runtime-only keys left out)</summary>"
        + f"<pre>{escape(config)}</pre></details>"
    )


def _figure(name: str, png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f"<figure id='{escape(name)}'><img alt='{escape(name)}' src='data:image/png;base64,{data}'>"
        f"<figcaption>{escape(name)}: {escape(caption)}</figcaption></figure>"
    )


def report_html(metrics: Mapping[str, Any], figures: Mapping[str, bytes], title: str) -> str:
    """The report page: key numbers, per-class tables per area, per-scene table, all figures and
    the provenance block (``metrics["provenance"]``)."""
    colors = [c["color"] for c in metrics.get("classes", [])]
    areas = metrics["areas"]
    baselines = metrics.get("baselines")
    warnings = "".join(
        f"<p class='note warning'>Warning: {escape(w)}</p>" for w in metrics.get("warnings", [])
    )
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        warnings,
        "<h2>Key numbers</h2>",
        key_numbers_table(areas, baselines),
        baselines_note(baselines),
        f"<p class='note'>{escape(WHOLE_SCENE_NOTE)}</p>",
        "<p>Metrics are computed over the full predicted scenes against the reference masks, "
        "pixels where either holds no data (0) left out. The same numbers are in "
        "<code>metrics.json</code>.</p>",
    ]
    for area in TABLE_AREAS:
        if area in areas:
            beside = {b: _baseline_area(baselines, b, area) for b in BASELINE_TITLES}
            parts += [
                f"<h2>Per class: {escape(AREA_TITLES[area])}</h2>",
                per_class_table(areas[area], colors, beside),
            ]
    if metrics.get("scenes"):
        parts += ["<h2>Per scene</h2>", per_scene_table(metrics["scenes"])]
    parts += ["<h2>Clouds</h2>", clouds_section(metrics.get("clouds"))]
    parts.append("<h2>Figures</h2>")
    ordered = [n for n in FIGURE_CAPTIONS if n in figures] + sorted(
        n for n in figures if n not in FIGURE_CAPTIONS
    )
    for name in ordered:
        caption = FIGURE_CAPTIONS.get(name, "")
        if name.startswith("overview_"):
            scene = name.removeprefix("overview_").removesuffix(".png")
            caption = f"Scene {scene}, decimated: true colour | prediction | reference mask."
        parts.append(_figure(name, figures[name], caption))
    parts += ["<h2 id='provenance'>Provenance</h2>", provenance_section(metrics.get("provenance"))]
    parts.append("</body></html>\n")
    return "\n".join(parts)
