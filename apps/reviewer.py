"""medcam reviewer: a Streamlit app for radiologists to triage, read and review CAM findings.

Start it with ``medcam review [DIR] [--db PATH] [--port N]`` (see ``medcam review --help``);
it reads its configuration from the environment that command sets
(:class:`medcam.review.ReviewConfig`). This file is the user interface only: the worklist,
the review database, the drawing and the exports live in :mod:`medcam.review`.

Two pages, switched in the sidebar: **Review** (the worklist and the viewer) and **Monitoring**
(``medcam monitor``'s figures and alarms on the database's cached scores,
:mod:`medcam.review.monitoring`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st
import torch

from medcam.errors import MedcamError
from medcam.export import COLOUR_MAPS
from medcam.export.contours import mask_polygons
from medcam.gate.served import ServedModel
from medcam.models.grid import normalise_maps
from medcam.models.predictor import Prediction
from medcam.monitor.periods import PERIODS
from medcam.monitor.report import PERIOD_COLUMNS, SHIFT_COLUMNS, period_rows, shift_rows
from medcam.monitor.run import validation_flag_rate
from medcam.monitor.table import GROUP_COLUMNS
from medcam.regions import RegionOptions, RegionSet, find_regions
from medcam.review import STATUSES, ImageRef, Review, ReviewConfig, ReviewStore, WorkItem, Worklist
from medcam.review.display import PRESETS, View, encode_png, preset_window, region_rows, render
from medcam.review.export import FORMATS, export_accepted, export_folder, zip_files
from medcam.review.monitoring import StoreMonitoring, monitor_store
from medcam.review.worklist import Limits, load_prediction, save_upload, select
from medcam.runtime import retain_freed_memory
from medcam.scoring.results import ModelInfo

METHODS = {"CAM (single pass)": "cam", "Grad-CAM": "gradcam", "Grad-CAM++": "gradcam++", "Occlusion": "occlusion"}

MAX_REGION_ROWS = 12
RULES = {"fraction of the map's maximum": "fraction", "calibrated probability": "absolute"}
PAGES = ("Review", "Monitoring")
MONITOR_ROWS = {"every image scored into this database": False, "the images of the worklist now": True}
NO_SPLIT = "(none)"
# The Review page's choices, kept while the Monitoring page is shown (Streamlit forgets the state of
# widgets that a run does not draw, unless it is set again). No string here: Streamlit would show it.
KEPT = ("image", "statuses", "flagged_only", "search")


@st.cache_resource(show_spinner="Loading the model ...")
def get_classifier(model: str, segmenter: str | None) -> ServedModel:
    """The model and its lung segmenter (None: none), loaded once per server process (whose
    allocator then keeps freed memory)."""
    retain_freed_memory()
    classifier = ServedModel(model, segmenter=segmenter)
    size = classifier.checkpoint.preprocess.size
    classifier.forward(torch.zeros(1, 1, size, size))  # warm-up: the first pass is several times slower
    return classifier


@st.cache_resource
def get_workspace(db: str, folder: str | None, uploads: str, max_bytes: int, max_pixels: int) -> Worklist:
    """The review database and the worklist, shared by every session of this server."""
    return Worklist(folder, uploads, ReviewStore(db), Limits(max_bytes=max_bytes, max_pixels=max_pixels))


@st.cache_resource(max_entries=6, show_spinner="Reading the image and computing its maps ...")
def get_prediction(key: str, model_id: str, segmenter_id: str, method: str, _path: str, _classifier: ServedModel,
                   _limits: Limits) -> Prediction:
    """The prediction of one file, cached by its content hash, the model and segmenter ids and the map method."""
    return load_prediction(_path, _classifier, _limits, method=method)


@st.cache_resource(max_entries=12, show_spinner=False)
def get_lung_outline(key: str, model_id: str, segmenter_id: str, _prediction: Prediction) -> list[np.ndarray]:
    """The outlines of the prediction's lung fields on its source grid; none without a lung mask."""
    return [] if _prediction.lungs is None else mask_polygons(_prediction.lungs.numpy())


@st.cache_resource(max_entries=12, show_spinner=False)
def get_heat(key: str, model_id: str, class_name: str, _prediction: Prediction) -> np.ndarray:
    index = _prediction.classes.index(class_name)
    return normalise_maps(_prediction.maps[None, index:index + 1], "positive")[0, 0].numpy()


@st.cache_resource(max_entries=24, show_spinner=False)
def get_regions(key: str, model_id: str, class_name: str, rule: str, value: float,
                _prediction: Prediction) -> RegionSet:
    return find_regions(_prediction, class_name, RegionOptions(rule=rule, value=value))  # type: ignore[arg-type]


def flash(kind: str, text: str) -> None:
    """A message shown at the top of the next run."""
    st.session_state.setdefault("flash", []).append((kind, text))


def show_flash() -> None:
    for kind, text in st.session_state.pop("flash", []):
        getattr(st, kind)(text)


def sidebar(config: ReviewConfig, worklist: Worklist, classifier: ServedModel) -> None:
    ckpt = classifier.checkpoint
    st.sidebar.title("medcam review")
    st.sidebar.radio("Page", PAGES, key="page", horizontal=True)
    st.sidebar.caption(f"Model {ckpt.model_id}; {ckpt.model.positive_class} flagged at p ≥ {ckpt.threshold:.2f}; "
                       + (f"lung segmenter {classifier.segmenter_id}" if classifier.segmenter is not None
                          else "no lung segmenter (no lung outline or lung evidence)"))
    if not ckpt.trained:
        st.sidebar.warning("Untrained placeholder model: scores and maps are meaningless.")
    st.sidebar.text_input("Reviewer name", key="reviewer", help="Recorded with every change, in the audit trail.")
    uploads = st.sidebar.file_uploader(
        "Add images", accept_multiple_files=True, key="uploads",
        help=f"DICOM, NIfTI, PNG or JPEG; at most {config.max_upload_mb} MiB and "
             f"{config.limits.max_pixels:,} pixels each.")
    done: set[str] = st.session_state.setdefault("uploaded", set())
    for upload in uploads or []:
        if upload.file_id in done:
            continue
        done.add(upload.file_id)
        try:
            save_upload(upload.name, upload.getvalue(), worklist.uploads, worklist.limits)
        except MedcamError as err:
            st.session_state.setdefault("upload_errors", []).append(f"Refused: {err}")
        else:
            flash("success", f"Added {upload.name} to the worklist.")
            st.session_state.pop("files", None)
    for message in st.session_state.get("upload_errors", []):
        st.sidebar.error(message)
    if st.session_state.get("upload_errors") and st.sidebar.button("Dismiss upload messages"):
        st.session_state.pop("upload_errors")
        st.rerun()
    if st.session_state.get("page", PAGES[0]) == "Review":
        st.sidebar.subheader("Filters")
        st.session_state.setdefault("statuses", list(STATUSES))
        st.sidebar.multiselect("Status", STATUSES, key="statuses")
        st.sidebar.checkbox("Flagged only", key="flagged_only")
        st.sidebar.text_input("Name contains", key="search")
    if st.sidebar.button("Rescan folder"):
        st.session_state.pop("files", None)
    st.sidebar.download_button("Download all reviews (CSV)", worklist.store.reviews_csv(), "medcam-reviews.csv",
                               "text/csv", key="reviews_csv", on_click="ignore")


def load_worklist(worklist: Worklist, classifier: ServedModel) -> list[WorkItem]:
    if "files" not in st.session_state:
        st.session_state["files"] = worklist.files()
    files = st.session_state["files"]
    pending = worklist.unscored(classifier.checkpoint.model_id, files, segmenter=classifier.segmenter_id)
    if pending:
        bar = st.progress(0.0, text="Scoring ...")

        def progress(done: int, total: int, name: str) -> None:
            bar.progress(done / total, text=f"Scoring {name} ({done + 1}/{total})")

        worklist.score(classifier, pending, progress)
        bar.empty()
    return worklist.items(classifier, files)


def worklist_table(items: list[WorkItem], shown: list[WorkItem], positive: str, expanded: bool) -> None:
    counts = {s: sum(i.status == s for i in items) for s in STATUSES}
    with st.expander(f"Worklist: {len(shown)} of {len(items)} images, highest P({positive}) first · "
                     + " · ".join(f"{s} {n}" for s, n in counts.items()), expanded=expanded):
        rows = [{"image": i.name, f"P({positive})": i.probability, "flagged": i.flagged,
                 "lung evidence": i.lung_evidence, "caution": i.quality, "status": i.status,
                 "reviewer": i.reviewer, "problem": i.error} for i in shown]
        st.dataframe(rows, hide_index=True, height=min(38 + 35 * max(len(rows), 1), 300),
                     column_config={f"P({positive})": st.column_config.NumberColumn(format="%.3f"),
                                    "lung evidence": st.column_config.NumberColumn(
                                        format="%.2f", help="Share of the map's positive evidence inside the "
                                                            "lung fields")})


def item_label(item: WorkItem) -> str:
    """The image list's label: name and score only. Streamlit matches the chosen entry by its
    label, so a label that changed under the reviewer (with the status) would drop the choice."""
    score = "not scored" if item.probability is None else f"p={item.probability:.3f}"
    return f"{item.name} — {score}"


def view_controls(prediction: Prediction, key: str, review: Review | None) -> tuple[str, View, str, float, bool]:
    """The viewer's controls; returns the class, the view, the threshold rule and value, and
    whether to outline the lung fields.

    A newly chosen image starts at the chosen window preset and, when it has a review, at
    the class and threshold it was last reviewed at.
    """
    ss = st.session_state
    pixels = prediction.image.pixels
    windows = {name: preset_window(name, pixels) for name in PRESETS}
    ss.setdefault("preset", next(iter(PRESETS)))
    if ss.get("shown") != key:
        ss["level"], ss["width"] = windows[ss["preset"]]
        ss["shown"] = key
        saved_rule, _, saved_value = review.threshold.partition(":") if review else ("", "", "")
        if review and review.class_name in prediction.classes and saved_rule in RULES.values() and saved_value:
            ss["cam_class"] = review.class_name
            ss["rule"] = next(label for label, name in RULES.items() if name == saved_rule)
            ss["threshold"] = float(saved_value)

    def apply_preset() -> None:
        ss["level"], ss["width"] = windows[ss["preset"]]

    classes = list(prediction.classes)
    ss.setdefault("cam_class", prediction.positive_class)
    class_name = st.radio("Map of class", classes, key="cam_class")
    st.selectbox("Map method", list(METHODS), key="method",
                 help="CAM: the model's own single-pass map (what batch scoring uses). Grad-CAM, Grad-CAM++ "
                      "and occlusion explain the same network another way, for comparison; they take longer.")
    st.selectbox("Window preset", list(PRESETS), key="preset", on_change=apply_preset,
                 help="On the display pixels (after the file's own VOI): default = as the file says; soft = "
                      "mid-greys (lung, soft tissue); bone = bright range; full range = image min to max.")
    level = st.slider("Level", 0.0, 1.0, step=0.01, key="level")
    width = st.slider("Width", 0.02, 2.0, step=0.01, key="width")
    zoom = st.slider("Zoom", 1.0, 8.0, 1.0, step=0.5, key="zoom")
    centre = (0.5, 0.5)
    if zoom > 1:
        centre = (st.slider("Centre, rows (%)", 0, 100, 50, key="centre_row") / 100,
                  st.slider("Centre, columns (%)", 0, 100, 50, key="centre_col") / 100)
    show = st.toggle("CAM overlay", value=True, key="show_cam")
    lungs = st.toggle("Lung outline", value=False, key="show_lungs", disabled=prediction.lungs is None,
                      help="The lung fields found by the lung segmenter, outlined in magenta."
                      if prediction.lungs is not None else "No lung mask: the model is served without a lung "
                      "segmenter (medcam review --segmenter).")
    opacity = st.slider("Opacity", 0.0, 1.0, 0.4, step=0.05, key="opacity", disabled=not show)
    colour_map = st.selectbox("Colour map", COLOUR_MAPS, key="colour_map", disabled=not show)
    rule_label = st.radio("Threshold on", list(RULES), key="rule")
    ss.setdefault("threshold", 0.5)
    value = st.slider("Threshold", 0.05, 0.95, step=0.05, key="threshold",
                      help="Regions are the connected areas of the map at or above this value.")
    view = View(level=level, width=width, zoom=zoom, centre=centre, colour_map=colour_map,
                opacity=opacity if show else 0.0)
    return class_name, view, RULES[rule_label], float(value), lungs and prediction.lungs is not None


def region_panel(store: ReviewStore, image: ImageRef, regions: RegionSet, threshold: str,
                 decisions: Mapping[int, str], reviewer: str) -> None:
    st.markdown(f"**Regions** ({len(regions)}): {regions.options.describe()}")
    if not len(regions):
        st.caption("No region at this threshold. Lower it to see weaker evidence.")
        return
    st.dataframe(region_rows(regions.regions, decisions), hide_index=True)

    def decide(region_id: int, decision: str | None) -> None:
        region = next(r for r in regions.regions if r.id == region_id)
        try:
            store.decide_region(image, reviewer, class_name=regions.class_name, threshold=threshold,
                                region_id=region_id, decision=decision,  # type: ignore[arg-type]
                                measurements=region.measurements())
        except MedcamError as err:
            flash("error", str(err))

    for region in regions.regions[:MAX_REGION_ROWS]:
        area = f"{region.area_mm2:.0f} mm²" if region.area_mm2 is not None else f"{region.area_px} px"
        cols = st.columns([2, 1, 1, 1])
        cols[0].markdown(f"Region {region.id} · {area} · **{decisions.get(region.id, 'undecided')}**")
        cols[1].button(f"Accept {region.id}", key=f"accept-{region.id}", on_click=decide, args=(region.id, "accept"),
                       disabled=not reviewer)
        cols[2].button(f"Reject {region.id}", key=f"reject-{region.id}", on_click=decide, args=(region.id, "reject"),
                       disabled=not reviewer)
        cols[3].button(f"Clear {region.id}", key=f"clear-{region.id}", on_click=decide, args=(region.id, None),
                       disabled=not reviewer or region.id not in decisions)
    if len(regions) > MAX_REGION_ROWS:
        st.caption(f"{len(regions) - MAX_REGION_ROWS} weaker regions not listed; raise the threshold.")


def review_form(store: ReviewStore, image: ImageRef, class_name: str, threshold: str, reviewer: str) -> None:
    review = store.review(image.key)
    options = ["agree", "disagree"]
    ss = st.session_state

    def save(sign_off: bool) -> None:
        try:
            status = store.save_review(image, reviewer, agreement=ss.get(f"agreement-{image.key}"),
                                       note=ss.get(f"note-{image.key}", ""), class_name=class_name,
                                       threshold=threshold, sign_off=sign_off)
        except MedcamError as err:
            flash("error", str(err))
        else:
            flash("success", f"Review saved: {image.name} is {status}.")

    with st.form(f"review-{image.key}"):
        st.radio("Overall, do you agree with the AI finding?", options, horizontal=True, key=f"agreement-{image.key}",
                 index=options.index(review.agreement) if review and review.agreement else None)
        st.text_area("Note", value=review.note if review else "", key=f"note-{image.key}")
        left, right = st.columns(2)
        left.form_submit_button("Save", on_click=save, args=(False,), disabled=not reviewer)
        right.form_submit_button("Save and mark reviewed", on_click=save, args=(True,), disabled=not reviewer,
                                 type="primary")


def export_panel(worklist: Worklist, exports: Path, prediction: Prediction, image: ImageRef, regions: RegionSet,
                 threshold: str, accepted: list[int], rejected: list[int], reviewer: str) -> None:
    ss = st.session_state
    st.markdown("**Export accepted regions**")
    formats = st.multiselect("Formats", FORMATS, default=["seg", "png", "json"], key="formats",
                             help="seg: DICOM SEG; sc: DICOM Secondary Capture; sr: DICOM structured report with "
                                  "your accept/reject of each region; gsps: presentation state with the outlines; "
                                  "nifti: label image; png: mask and outlines; json: COCO-style; csv: measurements; "
                                  "lungs: the lung fields' mask (PNG, NIfTI, DICOM SEG).")

    def run_export() -> None:
        try:
            folder = export_folder(exports, image.name, image.key)
            result = export_accepted(prediction, regions, accepted, folder, ss["formats"], reviewer=reviewer,
                                     rejected=rejected)
            if result.files:
                worklist.store.mark_exported(image, reviewer, class_name=regions.class_name, threshold=threshold,
                                             region_ids=accepted, files={k: str(v) for k, v in result.files.items()})
        except (MedcamError, ValueError) as err:
            flash("error", f"Export failed: {err}")
            return
        ss["last_export"] = {"key": image.key, "folder": str(folder),
                             "files": {k: str(v) for k, v in result.files.items()},
                             "zip": zip_files(result.files) if result.files else b"",
                             "skipped": result.skipped, "errors": result.errors}

    st.button(f"Export {len(accepted)} accepted region(s)", on_click=run_export, key="export",
              disabled=not (reviewer and accepted and formats))
    if not accepted:
        st.caption("Accept at least one region to export.")
    done: dict[str, Any] | None = ss.get("last_export")
    if done and done["key"] == image.key:
        if done["files"]:
            st.success(f"Exported {', '.join(sorted(done['files']))} to {done['folder']}")
            st.download_button("Download export (zip)", done["zip"], f"{Path(done['folder']).parent.name}.zip",
                               "application/zip", key="export_zip", on_click="ignore")
        for fmt, why in {**done["skipped"], **done["errors"]}.items():
            st.warning(f"{fmt}: {why}")


def viewer(worklist: Worklist, exports: Path, classifier: ServedModel, item: WorkItem, reviewer: str) -> None:
    store = worklist.store
    model_id = classifier.checkpoint.model_id
    if item.error:
        st.error(f"{item.name} cannot be shown: {item.error}")
        return
    method = METHODS[st.session_state.get("method", next(iter(METHODS)))]
    try:
        prediction = get_prediction(item.key, model_id, classifier.segmenter_id, method, item.path, classifier,
                                    worklist.limits)
    except MedcamError as err:
        st.error(f"{item.name} cannot be shown: {err}")
        return
    image = ImageRef(item.key, item.name, item.path)
    if reviewer and item.status == "unread":
        store.open_review(image, reviewer, model_id=model_id, probability=item.probability,
                          lung_evidence=prediction.lung_evidence, quality=prediction.quality,
                          segmenter=prediction.segmenter_id)
    if not reviewer:
        st.info("Enter your name in the sidebar to review this image.")
    left, right = st.columns([3, 1])
    with right:
        class_name, view, rule, value, show_lungs = view_controls(prediction, item.key, store.review(item.key))
    regions = get_regions(item.key, model_id, class_name, rule, value, prediction)
    threshold = f"{rule}:{value:.2f}"
    decisions = {i: d.decision for i, d in store.region_decisions(item.key, class_name=class_name,
                                                                   threshold=threshold).items()}
    heat = get_heat(item.key, model_id, class_name, prediction) if view.opacity > 0 else None
    with left:
        p = prediction.probability(prediction.positive_class)
        flagged = "FLAGGED" if prediction.flagged else "not flagged"
        evidence = "" if prediction.lung_evidence is None else f" · lung evidence {prediction.lung_evidence:.2f}"
        calibrated = f" · calibrated as {prediction.calibration_group}" if prediction.calibration_group else ""
        st.markdown(f"**{item.name}** · AI: P({prediction.positive_class}) = {p:.3f} ({flagged}){calibrated}"
                    f"{evidence} · status **{store.status(item.key)}** · map: {method}")
        if prediction.quality:
            st.warning(f"**Caution: {prediction.quality}.** Most of the map's evidence for "
                       f"{prediction.positive_class} lies outside the lung fields; check what drives the finding "
                       "(turn on the lung outline) before agreeing with it.", icon="⚠️")
        outline = get_lung_outline(item.key, model_id, classifier.segmenter_id, prediction) if show_lungs else []
        picture = render(prediction.image.pixels, heat, regions.regions, view, decisions, lungs=outline)
        spacing = prediction.image.spacing
        size = f"{spacing[0]:.3f} x {spacing[1]:.3f} mm pixels" if spacing else "pixel spacing unknown"
        lung_caption = " · lung outline" if outline else ""
        st.image(encode_png(picture), caption=f"{class_name} CAM · {len(regions)} region(s){lung_caption} · {size} · "
                                  f"{prediction.image.display or prediction.image.format}",
                 alt=f"overlay {item.name} {class_name} {threshold}", output_format="PNG")
        region_panel(store, image, regions, threshold, decisions, reviewer)
    review_form(store, image, class_name, threshold, reviewer)
    export_panel(worklist, exports, prediction, image, regions, threshold,
                 [i for i, d in decisions.items() if d == "accept"],
                 [i for i, d in decisions.items() if d == "reject"], reviewer)
    with st.expander("Audit trail of this image"):
        st.dataframe([{"when (UTC)": e.at, "who": e.reviewer, "what": e.action, "detail": e.detail}
                      for e in store.audit(item.key)], hide_index=True)


def monitoring(store: ReviewStore, classifier: ServedModel, items: list[WorkItem]) -> None:
    """The Monitoring page: ``medcam monitor``'s verdict, alarms and figures on the cached scores."""
    ckpt = classifier.checkpoint
    st.header("Monitoring")
    st.caption(f"Model {ckpt.model_id}: its scores cached in this database, by the day (or week) they were "
               "scored, held against the first periods, as `medcam monitor` holds results files against them. "
               "Alarms are judged on the latest complete period only.")
    cols = st.columns(4)
    period = cols[0].selectbox("Period", PERIODS, key="monitor_period")
    baseline = cols[1].number_input("Reference periods", min_value=1, max_value=52, value=2, step=1,
                                    key="monitor_baseline", help="The first periods with rows, which the later "
                                    "ones are held against (medcam monitor --baseline-periods).")
    by = cols[2].selectbox("Scores split by", [NO_SPLIT, *GROUP_COLUMNS], key="monitor_by",
                           help="A DICOM header value to compare score distributions per group (--by).")
    rows = cols[3].radio("Rows", list(MONITOR_ROWS), key="monitor_rows")
    try:
        found = monitor_store(store, ModelInfo.from_checkpoint(ckpt), period=period,
                              by=None if by == NO_SPLIT else by, baseline_periods=int(baseline),
                              keys={i.key for i in items} if MONITOR_ROWS[rows] else None,
                              validation_rate=validation_flag_rate(ckpt.metadata))
    except MedcamError as err:
        st.info(str(err))
        return
    monitoring_findings(found)


def _pictures(found: StoreMonitoring, section: str) -> None:
    for picture in found.pictures:
        if picture.section == section:
            st.image(picture.png, caption=picture.alt, output_format="PNG")


def monitoring_findings(found: StoreMonitoring) -> None:
    s = found.summary
    verdict = s["verdict"]
    show = {"alarm": st.error, "ok": st.success, "unreadable input": st.warning}.get(verdict, st.info)
    show(f"**{verdict.upper()}** · {s['last_line']}")
    if s["alarms"]:
        st.dataframe([{"check": a["check"], "period": a["period"], "group": a["group"], "on": a["variable"],
                       "figure": a["figure"], "limit": a["limit"]} for a in s["alarms"]], hide_index=True)
    st.download_button("Download report.html", found.report, "medcam-monitor-report.html", "text/html",
                       key="monitor_report", on_click="ignore")
    reference = s["reference"]
    others = "".join(f"; {n} image(s) scored by model {m} are left out" for m, n in found.other_models.items())
    st.caption(f"{s['inputs']['rows']} scored image(s) of model {', '.join(s['models'])}{others}. Reference: "
               f"{reference['source']}, {reference['rows_analysed']} analysed, flag rate {reference['flag_rate']:.3f}."
               + (f" Validation split's flag rate {s['validation']['flag_rate']:.3f}, for comparison only."
                  if s["validation"] else ""))

    st.subheader("Volume and status")
    _pictures(found, "volume")
    st.caption("Grey: the reference periods; yellow: the judged period; dotted: the lung segmenter changed.")
    if s["reasons"]:
        st.dataframe(s["reasons"], hide_index=True)

    st.subheader("Flag rate")
    _pictures(found, "flag_rate")
    st.dataframe([dict(zip(PERIOD_COLUMNS, row, strict=True)) for row in period_rows(s)], hide_index=True)

    st.subheader("Score distributions: probability, OOD score, lung evidence")
    _pictures(found, "psi")
    if s["shifts"]:
        st.dataframe([dict(zip(SHIFT_COLUMNS, row, strict=True)) for row in shift_rows(s)], hide_index=True)
        _pictures(found, "distributions")
    else:
        st.caption("No judged period, so no distribution is compared.")
    if s["model_changes"]:
        st.subheader("Lung segmenter changes")
        st.dataframe(s["model_changes"], hide_index=True)

    st.subheader("Reviews: regions accepted and rejected, sign-offs")
    _pictures(found, "reviews")
    if not any(p.section == "reviews" for p in found.pictures):
        st.caption("No region decision or sign-off yet.")
    t = s["thresholds"]
    st.caption(f"Alarms: the flag rate outside {t['p_chart_sigmas']:g}-sigma p-chart limits; a CUSUM above "
               f"h = {t['cusum_h']:g} (k = {t['cusum_k']:g}); PSI ≥ {t['psi_limit']:g} of the probability or OOD "
               f"score in a group of ≥ {t['psi_min_rows']} analysed images. The two-sample test, lung evidence, the "
               "validation split and reviews are shown, never alarmed on.")


def main() -> None:
    st.set_page_config(page_title="medcam review", layout="wide")
    try:
        config = ReviewConfig.from_env()
        classifier = get_classifier(config.model, config.served_segmenter)
        worklist = get_workspace(str(config.db), str(config.folder) if config.folder else None, str(config.uploads),
                                 config.limits.max_bytes, config.limits.max_pixels)
    except MedcamError as err:
        st.error(f"The reviewer cannot start: {err}")
        st.stop()
    sidebar(config, worklist, classifier)
    show_flash()
    items = load_worklist(worklist, classifier)
    ss = st.session_state
    if ss.get("page", PAGES[0]) == "Monitoring":
        for key in KEPT:
            if key in ss:
                ss[key] = ss[key]
        ss.pop("shown", None)  # back on the Review page, the chosen image's view starts afresh
        monitoring(worklist.store, classifier, items)
        return
    shown = select(items, statuses=ss.get("statuses", STATUSES), flagged_only=ss.get("flagged_only", False),
                   text=ss.get("search", ""))
    by_key = {i.key: i for i in shown}
    choice = st.selectbox("Image", list(by_key), index=None, format_func=lambda k: item_label(by_key[k]),
                          placeholder="Choose an image to read", key="image")
    worklist_table(items, shown, classifier.checkpoint.model.positive_class, expanded=choice is None)
    if choice is None:
        if not items:
            st.info("No images yet: start with a folder (medcam review DIR) or add images in the sidebar.")
        return
    viewer(worklist, config.exports, classifier, by_key[choice], ss.get("reviewer", "").strip())


main()
