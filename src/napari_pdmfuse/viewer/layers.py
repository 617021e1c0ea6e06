"""The result layers in a napari viewer, from one :class:`~.jobs.Outcome`. Qt-free.

In-memory results become plain image layers; streamed results become multiscale layers read
from their OME-Zarr stores, added as soon as the run starts and refreshed while tiles arrive, so
the user sees them fill in. Either way the layers are placed like the source (scale,
translate, units, labels; channels and time points where the source had them), and fusing the
same source again updates them instead of adding new ones.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.layers import Image, Surface

from ..align import report
from ..errors import InputError
from ..methods import DEFAULT_SELECTION
from .height_view import height_surface
from .jobs import Outcome, store_levels

#: Layer name suffix of each output kind, in the order the layers are added.
SUFFIXES = {
    "confidence": "confidence",
    "focus_map": "focus map",
    "fused": "fused",
    "coverage": "coverage",
}

#: A streamed run refreshes its layers after every this many tiles (and after the last).
REFRESH_TILES = 8


def layer_name(outcome: Outcome, kind: str) -> str:
    return f"{outcome.source.name} {SUFFIXES[kind]}"


def _axes(outcome: Outcome, kind: str) -> str:
    if kind == "fused":
        return outcome.axes
    if kind == "coverage":
        return "T" * ("T" in outcome.axes) + "YX"
    return outcome.map_axes


def levels(outcome: Outcome, kind: str) -> list[Any] | None:
    """The output ``kind`` as pyramid levels (finest first) laid out like ``_axes``: one
    in-memory array, or lazy dask arrays over a store's levels; None if not produced."""
    if not outcome.streamed:
        result = outcome.result
        if kind == "coverage":
            return None if result.coverage is None else [result.coverage.astype(np.uint8)]
        return [{"fused": result.fused, "focus_map": result.focus_map}.get(kind, result.confidence)]
    path = outcome.stores.get(kind)
    if path is None:
        return None
    import dask.array as da

    arrays = [da.from_zarr(level) for level in store_levels(path)]
    if kind == "fused" and outcome.source.rgb:  # stored with the samples before Y and X
        arrays = [da.moveaxis(level, -3, -1) for level in arrays]
    return arrays


def show(viewer: Any, outcome: Outcome) -> None:
    """Add the result layers, or update those of an earlier run on the same source."""
    source = outcome.source
    metadata: dict[str, Any] = {
        "source": source.name,
        "method": outcome.method,
        "planes": source.layers,
    }
    if outcome.run.options.selection != DEFAULT_SELECTION:  # as the files' records say it
        metadata["selection"] = outcome.run.options.selection
    if outcome.transforms is not None:
        metadata["alignment"] = alignment_report(outcome.transforms)
    physical = outcome.focus_unit == "physical"
    spacing = source.z_scale if physical else 1.0
    top = float(max(source.n_planes - 1, 1)) * spacing
    props: dict[str, dict[str, Any]] = {
        "confidence": {"colormap": "gray", "contrast_limits": (0.0, 1.0), "visible": False},
        "focus_map": {
            "colormap": "turbo",
            "contrast_limits": (min(0.0, top), max(0.0, top)),
            "metadata": {
                "focus_unit": source.focus_unit,
                "z_spacing": spacing if physical else None,
            },
        },
        "fused": {"rgb": source.rgb, "contrast_limits": source.contrast_limits},
        "coverage": {
            "colormap": "gray",
            "contrast_limits": (0.0, 255.0 if outcome.streamed else 1.0),
            "visible": False,
        },
    }
    if not source.rgb:
        props["fused"]["colormap"] = source.colormap
    for kind, extra in props.items():
        chosen = kind == "coverage" or kind in outcome.run.outputs
        data = levels(outcome, kind) if chosen else None
        name = layer_name(outcome, kind)
        if data is None:
            if kind == "coverage" and outcome.done and name in viewer.layers:
                viewer.layers.remove(name)  # from an earlier, aligned run: no longer true
            continue
        axes = _axes(outcome, kind)
        info = {**metadata, **extra.pop("metadata", {}), "axes": axes}
        if outcome.streamed:
            info["store"] = str(outcome.stores[kind])
        placed = source.placement(axes.replace("S", ""))
        _put(viewer, name, data, outcome, metadata=info, **extra, **placed)


def refresh(viewer: Any, outcome: Outcome, done: int, total: int) -> None:
    """Redraw a streamed run's layers every :data:`REFRESH_TILES` tiles, as they fill in."""
    if not outcome.streamed or not (done == total or done % REFRESH_TILES == 0):
        return
    for kind in outcome.stores:
        name = layer_name(outcome, kind)
        if name in viewer.layers:
            viewer.layers[name].refresh()


def remove(viewer: Any, outcome: Outcome) -> None:
    """Remove the layers showing a streamed run that did not finish (its stores go too)."""
    for kind in outcome.stores or {}:
        name = layer_name(outcome, kind)
        layer = _find(viewer.layers, name)
        if layer is not None and layer.metadata.get("store") == str(outcome.stores[kind]):
            viewer.layers.remove(layer)


def _find(layers: Any, name: str) -> Any:
    return next((layer for layer in layers if layer.name == name), None)


def _put(viewer: Any, name: str, data: list[Any], outcome: Outcome, **props: Any) -> Image:
    """Update layer ``name`` in place when it can take ``data``, else add (or replace) it.

    Streamed results are read from their stores whenever they are drawn, never from napari's
    dask cache: refreshing a running fusion shows its new tiles, a retouched chunk shows as
    rewritten, and the cache keeps no copy of a result after its layer is deleted (it kept
    every result drawn until its limit, a quarter of the memory, evicted it: 12 MiB per
    1024² result, ``benchmarks/napari_soak.py``). A store on local disk reads fast enough.
    """
    layers = viewer.layers
    multiscale = outcome.streamed
    rgb = props.pop("rgb", False)
    visible = props.pop("visible", True)
    value = data if multiscale else data[0]
    ndim = data[0].ndim - rgb
    old = _find(layers, name)
    if (
        isinstance(old, Image)
        and old.rgb == rgb
        and old.multiscale == multiscale
        and old.ndim == ndim
    ):
        limits = props.pop("contrast_limits")
        old.cache = not multiscale
        old.data = value
        old.reset_contrast_limits_range()
        old.contrast_limits_range = (
            min(limits[0], old.contrast_limits_range[0]),
            max(limits[1], old.contrast_limits_range[1]),
        )
        old.contrast_limits = limits
        for key, item in props.items():
            setattr(old, key, item)
        return old
    layer = Image(
        value,
        name=name,
        rgb=rgb,
        multiscale=multiscale,
        visible=visible,
        cache=not multiscale,
        **props,
    )
    if old is None:
        layers.append(layer)
    else:  # same name, other kind: put the new layer where the old one was
        index = layers.index(old)
        layers.remove(old)
        layers.insert(index, layer)
    return layer


def alignment_summary(outcome: Outcome) -> str:
    """One sentence: how far the planes moved, and how much of the field all of them cover."""
    planes = [t for time_point in outcome.transforms or [] for t in time_point]
    shift = max((float(np.hypot(t.dy, t.dx)) for t in planes), default=0.0)
    scales = [t.scale for t in planes] or [1.0]
    covered = 100 * (outcome.covered if outcome.covered is not None else 1.0)
    return (
        f"Aligned: shifts up to {shift:.1f} px, scale {min(scales):.4f} to {max(scales):.4f}, "
        f"all planes cover {covered:.0f} % of the field."
    )


def alignment_report(transforms: list[list[Any]]) -> str:
    """The alignment table of every time point, as :func:`napari_pdmfuse.align.report` has it."""
    if len(transforms) == 1:
        return "Alignment (reference: the middle plane)\n" + report(transforms[0])
    return "\n".join(f"Time point {t}\n{report(planes)}" for t, planes in enumerate(transforms))


def shown_planes(viewer: Any, outcome: Outcome) -> tuple[np.ndarray, ...]:
    """The 2-D focus map, fused image (Y, X[, C]) and confidence at the time point (and, fused
    separately, the channel) the viewer shows, and how many full-size pixels one of their
    pixels spans: a streamed result gives its coarsest level, small enough to draw."""
    lead = outcome.map_axes[:-2]
    maps = {kind: levels(outcome, kind) for kind in ("focus_map", "confidence", "fused")}
    if maps["focus_map"] is None or maps["fused"] is None:
        raise InputError(
            "The height view needs the focus map and the fused image; fuse again with both "
            "outputs ticked."
        )
    level = -1 if outcome.streamed else 0
    full = maps["focus_map"][0].shape
    index = [0] * len(lead)
    shown = [
        viewer.layers[layer_name(outcome, kind)]
        for kind in ("focus_map", "confidence")
        if layer_name(outcome, kind) in viewer.layers
    ]
    if lead and shown and shown[0].ndim == len(full):
        point = shown[0].world_to_data(viewer.dims.point)
        index = [int(np.clip(round(point[i]), 0, full[i] - 1)) for i in range(len(lead))]
    where = dict(zip(lead, index, strict=True))
    focus = np.asarray(maps["focus_map"][level][tuple(index)])
    confidence = np.asarray(maps["confidence"][level][tuple(index)]) if maps["confidence"] else None
    fused, axes = maps["fused"][level], outcome.axes
    if "T" in axes:
        fused, axes = fused[where["T"]], axes.replace("T", "")
    if "C" in axes:
        fused = fused[where["C"]] if "C" in lead else np.moveaxis(np.asarray(fused), 0, -1)
    factor = 2.0 ** (len(maps["focus_map"]) - 1) if outcome.streamed else 1.0
    return focus, np.asarray(fused), confidence, factor


def height_view(viewer: Any, outcome: Outcome, relief: float) -> Surface:
    """Add (or replace) "<name> height view": the focus map as a 3-D surface coloured with the
    fused image, and switch the viewer to 3-D."""
    source = outcome.source
    focus, fused, confidence, factor = shown_planes(viewer, outcome)
    z_scale = (1.0 if outcome.focus_unit == "physical" else source.z_scale) * relief
    vertices, faces, colors = height_surface(
        focus,
        fused,
        confidence,
        z_scale=z_scale,
        yx_scale=(source.scale[0] * factor, source.scale[1] * factor),
        rgb=source.rgb,
        contrast_limits=None if source.rgb else source.contrast_limits,
    )
    layer = Surface(
        (vertices, faces),
        vertex_colors=colors,
        name=f"{source.name} height view",
        translate=(source.z_translate, *source.translate),
        shading="smooth",
        metadata={"source": source.name, "method": outcome.method, "z_scale": z_scale},
    )
    layers = viewer.layers
    if layer.name in layers:
        index = layers.index(layer.name)
        layers.remove(layer.name)
        layers.insert(index, layer)
    else:
        layers.append(layer)
    viewer.dims.ndisplay = 3
    viewer.reset_view()
    # Look down on the surface from the front and a little from the side, Y still down.
    camera = getattr(viewer, "scene", viewer).camera  # viewer.scene since napari 0.9
    camera.set_view_direction((-1.0, -0.6, 0.3), up_direction=(1.0, 0.0, 0.0))
    return layer
