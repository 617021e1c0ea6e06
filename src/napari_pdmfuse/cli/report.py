"""A batch's report: one HTML page (with a CSV of the same rows beside it) to look over many
stacks at once.

Each stack is a row: thumbnails of the fused image and of the focus map, how many planes it
had, where the focus lies in planes and µm, how much of the field had little focus
information, its warnings, how long it took and how fast it went; a failed stack shows its
one-sentence error. The page is self-contained (thumbnails are PNG data URIs, the style sheet
is inline, there is no script), so it opens from a laptop or an e-mail with no network, and
it is written whole or not at all. Thumbnails are samples of the outputs (see
:mod:`napari_pdmfuse.overview`).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import os
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import OutputError
from ..overview import LOW_CONFIDENCE, Overview
from ..version import __version__
from ..writing import temp_name
from ..writing.meta import channel_colours

if TYPE_CHECKING:
    from .batch import Outcome

#: Marks a page as a report of this tool, which a later run may replace.
GENERATOR = "napari-pdmfuse report"

#: The CSV's columns, in order (its header marks it as ours, too).
COLUMNS = (
    "number",
    "input",
    "scene",
    "status",
    "output",
    "planes",
    "focus_low_planes",
    "focus_high_planes",
    "focus_low_um",
    "focus_high_um",
    "low_confidence_share",
    "seconds",
    "input_mb",
    "mb_per_s",
    "warnings",
    "error",
)

#: Thumbnails are shown in a square of this many CSS pixels, small ones scaled up.
SHOWN = 144

#: How much of a low-confidence pixel's focus colour is kept in the thumbnail.
FADE = 0.3

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1em; color: #222; }
h1 { font-size: 1.4em; margin: 0 0 .3em; }
p { margin: .3em 0; max-width: 70em; }
table { border-collapse: collapse; margin-top: 1em; width: 100%; }
th, td { border-bottom: 1px solid #ddd; padding: 5px 8px; vertical-align: middle; }
th { background: #f2f2f2; text-align: left; position: sticky; top: 0; }
td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
td.name { min-width: 12em; max-width: 16em; overflow-wrap: anywhere; }
td.name small { color: #666; display: block; }
td.notes { min-width: 14em; overflow-wrap: anywhere; }
img { image-rendering: pixelated; display: block; background: #000; }
tr.failed { background: #fdecea; }
tr.kept td.name::after { content: "kept (fused earlier)"; display: block; color: #666;
  font-size: .85em; }
.error { color: #a40000; }
.warning { color: #8a5a00; }
.bar { display: inline-block; width: 12em; height: 10px; vertical-align: middle;
  background: linear-gradient(to right, STOPS); }
"""


def report_csv(path: Path) -> Path:
    """The CSV written beside a report: ``report.html`` → ``report.csv``."""
    return path.with_suffix(".csv")


def check_report(path: Path, overwrite: bool, out_dir: Path) -> None:
    """Refuse, before any work, a report that cannot be written or would replace a file that
    is not an earlier report (unless ``overwrite``); its folder may be ``out_dir``, which the
    run creates."""
    if path.suffix.lower() not in (".html", ".htm"):
        raise OutputError(
            f"The report {path} is not named .html; give a name ending in .html (its CSV is "
            "written beside it)."
        )
    folder = path.parent
    if not folder.exists() and folder.absolute() == out_dir.absolute():
        return  # made with the outputs' folder
    if not folder.is_dir():
        raise OutputError(f"The folder {folder} for {path.name} does not exist; create it first.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(
            f"The folder {folder} is not writable; check its permissions or choose another one."
        )
    for target, mark in ((path, GENERATOR), (report_csv(path), ",".join(COLUMNS))):
        if target.is_dir() or (target.exists() and not overwrite and not _starts(target, mark)):
            raise OutputError(
                f"The report {target} already exists and is not a pdmfuse report; choose another "
                "name or allow overwriting (--overwrite)."
            )


def _starts(path: Path, mark: str) -> bool:
    """Whether ``mark`` is in the first 2 kB of ``path`` (an earlier report: replaced)."""
    try:
        with path.open("rb") as handle:
            return mark.encode() in handle.read(2048)
    except OSError:
        return False


def write_report(
    path: Path, outcomes: Sequence[Outcome], title: str, notes: Sequence[str] = ()
) -> None:
    """Write the HTML report and its CSV, each whole or not at all."""
    rows = [_Row(number, outcome) for number, outcome in enumerate(outcomes, 1)]
    _write(path, _page(rows, title, notes))
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(row.csv() for row in rows)
    _write(report_csv(path), text.getvalue())


def _write(path: Path, text: str) -> None:
    temp = temp_name(path)
    try:
        temp.write_text(text, encoding="utf-8")
        os.replace(temp, path)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise OutputError(
            f"Cannot write the report {path} ({exc.strerror}); check the folder, its "
            "permissions and free space."
        ) from None


class _Row:
    """One stack's figures, as the page and the CSV show them."""

    def __init__(self, number: int, outcome: Outcome) -> None:
        self.number, self.outcome = number, outcome
        written = outcome.written
        self.overview: Overview | None = None if written is None else written.overview
        view = self.overview
        self.range = None if view is None else view.focus_range()
        self.step = None if view is None else view.z_step_um
        self.seconds = None if written is None or written.skipped else written.seconds
        self.mb = None if view is None else view.input_bytes / 1e6

    def range_um(self) -> tuple[float, float] | None:
        if self.range is None or self.step is None:
            return None
        return self.range[0] * self.step, self.range[1] * self.step

    def speed(self) -> float | None:
        """Megabytes of the input fused per second."""
        if self.seconds is None or self.mb is None or self.seconds <= 0:
            return None
        return self.mb / self.seconds

    def csv(self) -> list[str]:
        outcome, view = self.outcome, self.overview
        written = outcome.written
        um = self.range_um()
        return [
            str(self.number),
            str(outcome.stack.input),
            "" if outcome.stack.scene is None else outcome.stack.scene.describe(),
            outcome.status,
            "" if written is None else str(written.paths[0]),
            "" if view is None else str(view.n_planes),
            *(_number(v, 3) for v in self.range or (None, None)),
            *(_number(v, 3) for v in um or (None, None)),
            _number(None if view is None else view.low_confidence, 4),
            _number(self.seconds, 3),
            _number(self.mb, 3),
            _number(self.speed(), 3),
            " | ".join(outcome.warnings),
            outcome.error or "",
        ]

    def html(self) -> str:
        outcome, view = self.outcome, self.overview
        written = outcome.written
        where = html.escape(str(outcome.stack.input), quote=True)
        name = f'<span title="{where}">{html.escape(outcome.stack.input.name)}</span>'
        if outcome.stack.scene is not None:
            name += f" <b>{html.escape(outcome.stack.scene.describe())}</b>"
        output = "" if written is None else f"<small>→ {html.escape(written.paths[0].name)}</small>"
        cells = [f'<td class="num">{self.number}</td>', f'<td class="name">{name}{output}</td>']
        images = ("", "") if view is None else _thumbnails(view)
        cells += [f"<td>{image}</td>" for image in images]
        planes = "" if view is None else str(view.n_planes)
        where = []
        if self.range is not None:
            where.append(f"{self.range[0]:.1f}–{self.range[1]:.1f} planes")
        um = self.range_um()
        if um is not None:
            where.append(f"{um[0]:.1f}–{um[1]:.1f} µm")
        low = None if view is None else view.low_confidence
        speed = self.speed()
        timing = [] if self.seconds is None else [f"{_seconds(self.seconds)} s"]
        timing += [] if speed is None else [f"{speed:.1f} MB/s"]
        cells += [
            f'<td class="num">{planes}</td>',
            f'<td class="num">{"<br>".join(where) or "–"}</td>',
            f'<td class="num">{"–" if low is None else f"{100 * low:.1f} %"}</td>',
            f'<td class="num">{"<br>".join(timing) or "–"}</td>',
            f'<td class="notes">{self._notes()}</td>',
        ]
        return f'<tr class="{outcome.status}">{"".join(cells)}</tr>'

    def _notes(self) -> str:
        notes = [f'<div class="warning">{html.escape(w)}</div>' for w in self.outcome.warnings]
        if self.outcome.error:
            notes.append(f'<div class="error">{html.escape(self.outcome.error)}</div>')
        return "".join(notes)


def _seconds(value: float) -> str:
    return f"{value:.2f}" if value < 1 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _number(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _page(rows: list[_Row], title: str, notes: Sequence[str]) -> str:
    statuses = [row.outcome.status for row in rows]
    counts = ", ".join(f"{statuses.count(s)} {s}" for s in ("fused", "kept", "failed"))
    seconds = sum(row.seconds or 0.0 for row in rows)
    made = time.strftime("%Y-%m-%d %H:%M")
    stops = ", ".join(_hex(c) for c in turbo(np.linspace(0, 1, 9)))
    style = STYLE.replace("STOPS", stops)
    head = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{len(rows)} stacks: {counts}; {seconds:.1f} s of fusion. Made {made} by "
        f"napari-pdmfuse {__version__}.</p>",
        *(f"<p>{html.escape(note)}</p>" for note in notes),
        '<p>Focus map: <span class="bar"></span> from the first plane to the last, faded to '
        f"grey where the confidence is under {LOW_CONFIDENCE:g} (little focus information: "
        "blank or featureless areas); low confidence: the share of such pixels. Focus range: "
        "1st to 99th percentile of the focus position over the confident pixels. Throughput: "
        "megabytes of the stack fused per second. Thumbnails show the first time point.</p>",
    ]
    header = (
        "<tr><th>#</th><th>stack</th><th>fused</th><th>focus map</th><th>planes</th>"
        "<th>focus range</th><th>low confidence</th><th>time</th>"
        "<th>notes</th></tr>"
    )
    body = "\n".join(row.html() for row in rows)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
        f'<meta name="generator" content="{GENERATOR}">\n'
        f"<title>{html.escape(title)}</title>\n<style>{style}</style></head>\n"
        f"<body>\n{''.join(head)}\n<table>\n<thead>{header}</thead>\n<tbody>\n{body}\n"
        "</tbody>\n</table>\n</body></html>\n"
    )


#: Thumbnails already encoded, so a report written again and again (by watch) encodes each once.
_ENCODED: weakref.WeakKeyDictionary[Overview, tuple[str, str]] = weakref.WeakKeyDictionary()


def _thumbnails(view: Overview) -> tuple[str, str]:
    """The fused image's and the focus map's ``<img>`` elements ("–" without a focus map)."""
    if view not in _ENCODED:
        focus = _focus_rgb(view)
        _ENCODED[view] = (
            _img(_fused_rgb(view), "fused image"),
            "–" if focus is None else _img(focus, "focus map"),
        )
    return _ENCODED[view]


def _img(rgb: np.ndarray, what: str) -> str:
    import imageio.v3 as iio

    png = iio.imwrite("<bytes>", rgb, extension=".png")
    height, width = rgb.shape[:2]
    scale = SHOWN / max(height, width)
    size = f'width="{round(width * scale)}" height="{round(height * scale)}"'
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" {size} alt="{what}">'


def _stretch(values: np.ndarray) -> np.ndarray:
    """Values scaled to [0, 1] between their 0.5th and 99.5th percentiles (finite ones)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros_like(values)
    low, high = np.percentile(finite, [0.5, 99.5])
    scaled = (values - low) / (high - low if high > low else 1.0)
    return np.clip(np.nan_to_num(scaled), 0, 1)


def _fused_rgb(view: Overview) -> np.ndarray:
    """The fused samples as 8-bit RGB: colour kept as is (one stretch for all samples), grey
    stretched, several channels each stretched and mixed in their display colours."""
    fused = view.fused
    if view.rgb:
        rgb = _stretch(fused[..., :3])
    else:
        colours = channel_colours(fused.shape[-1], rgb=False)
        weights = np.array([[int(c[i : i + 2], 16) / 255 for i in (0, 2, 4)] for c in colours])
        channels = np.stack([_stretch(fused[..., c]) for c in range(fused.shape[-1])], -1)
        rgb = np.clip(channels @ weights, 0, 1)
    return (rgb * 255 + 0.5).astype(np.uint8)


def _focus_rgb(view: Overview) -> np.ndarray | None:
    """The focus samples in the turbo colours, first plane to last, faded to a pale grey where
    the confidence is low (turbo's own ends are dark); black where unknown."""
    if view.focus is None:
        return None
    position = view.focus / max(view.n_planes - 1, 1)
    rgb = turbo(np.nan_to_num(position))
    if view.confidence is not None:
        low = (view.confidence < LOW_CONFIDENCE)[..., None]
        rgb = np.where(low, FADE * rgb + (1 - FADE) * 0.85, rgb)
    rgb[~np.isfinite(view.focus)] = 0
    return (rgb * 255 + 0.5).astype(np.uint8)


def turbo(x: np.ndarray) -> np.ndarray:
    """The Turbo colour map (Mikhailov, 2019; napari's focus-map colours) for values in
    [0, 1], as RGB in [0, 1], through Ruofei Du's polynomial fit of it."""
    x = np.clip(np.asarray(x, np.float64), 0, 1)[..., None]
    powers = np.concatenate([x**k for k in range(6)], axis=-1)
    coefficients = np.array(
        [
            [0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943],
            [0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604],
            [0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973],
        ]
    )
    return np.clip(powers @ coefficients.T, 0, 1)


def _hex(rgb: np.ndarray) -> str:
    r, g, b = (int(v * 255 + 0.5) for v in rgb)
    return f"#{r:02x}{g:02x}{b:02x}"
