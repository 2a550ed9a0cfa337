"""DICOM out: a prediction's masks as a DICOM Segmentation, its findings as a JSON sidecar.

So a result can go back into a PACS viewer beside the radiograph it was made from: the SEG
object (highdicom) references the source image by its SOP Class and Instance UIDs and shares its
patient and study, one binary segment per structure the run segments, at the source's own size.
The findings (probabilities, what is predicted, thresholds) go to a JSON file beside it, keyed
by the same UIDs, since a simple structured report would say no more.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from multimix.core.atomic import atomic_write, atomic_write_text
from multimix.core.errors import DataError

if TYPE_CHECKING:
    from multimix.api import Model, Prediction

__all__ = ["read_source_dataset", "segmentation_dataset", "write_dicom_result"]

SERIES_NUMBER = 9100  # of the SEG series; viewers list it beside the source's own series
_REQUIRED = ("SOPClassUID", "SOPInstanceUID", "Rows", "Columns")
# What highdicom copies from the source into the SEG; an export lacking them gets empty or
# fresh values (the SEG still names the source image by its UIDs).
_PATIENT_STUDY_DEFAULTS = {
    "PatientID": "",
    "PatientName": "",
    "PatientBirthDate": "",
    "PatientSex": "",
    "StudyID": "",
    "StudyDate": "",
    "StudyTime": "",
    "AccessionNumber": "",
    "ReferringPhysicianName": "",
}


def read_source_dataset(path: Path) -> Dataset | None:
    """The DICOM dataset of ``path``, or None when it is not DICOM (pixels not decoded)."""
    from multimix.data.io import looks_like_image

    path = Path(path)
    if path.suffix.lower() in (".png", ".jpg", ".jpeg") or not looks_like_image(path):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except Exception:
        return None


def segmentation_dataset(pred: Prediction, source: Dataset, model: Model | None = None):
    """The DICOM Segmentation of ``pred``'s masks, referencing ``source``.

    Raises:
        DataError: the source lacks the UIDs or size a SEG must reference, or its size is not
        the size the prediction was made at.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    import multimix

    name = pred.name
    missing = [k for k in _REQUIRED if k not in source]
    if missing:
        raise DataError(name, f"DICOM lacks {', '.join(missing)}; cannot reference it in a SEG")
    if (int(source.Rows), int(source.Columns)) != tuple(pred.shape):
        raise DataError(name, "the DICOM's Rows/Columns differ from the predicted image's size")
    ref = _with_defaults(source)
    structures = [s for s in pred.masks]
    pixels = np.stack([pred.masks[s] for s in structures], axis=-1).astype(np.uint8)[None]
    algorithm = hd.AlgorithmIdentificationSequence(
        name="multimix",
        family=codes.cid7162.ArtificialIntelligence,
        version=multimix.__version__,
        parameters={"run": model.run.name, "checkpoint": model.checkpoint} if model else None,
    )
    segments = [
        hd.seg.SegmentDescription(
            segment_number=k + 1,
            segment_label=structure,
            segmented_property_category=codes.SCT.Organ,
            segmented_property_type=_property(structure),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for k, structure in enumerate(structures)
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # highdicom warns of optional attributes it fills
        try:
            return hd.seg.Segmentation(
                source_images=[ref],
                pixel_array=pixels,
                segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
                segment_descriptions=segments,
                series_instance_uid=hd.UID(),
                series_number=SERIES_NUMBER,
                sop_instance_uid=hd.UID(),
                instance_number=1,
                manufacturer="multimix",
                manufacturer_model_name=model.cfg.backbone if model else "multimix",
                software_versions=multimix.__version__,
                device_serial_number="0",
                content_description="multimix segmentation",
                content_label="MULTIMIX",
                omit_empty_frames=False,
            )
        except (ValueError, TypeError, AttributeError) as exc:
            reason = " ".join(str(exc).split())[:200]
            raise DataError(name, f"cannot make a DICOM SEG for it ({reason})") from None


def _property(structure: str):
    """The SNOMED code of a structure (lungs, heart, clavicles), else a generic organ."""
    from pydicom.sr.codedict import codes

    table = {"lungs": "Lung", "lung": "Lung", "heart": "Heart", "clavicles": "Clavicle"}
    return getattr(codes.SCT, table.get(structure, "Organ"))


def _with_defaults(source: Dataset) -> Dataset:
    """A copy of the source's header with the patient/study attributes a SEG copies."""
    import highdicom as hd

    ref = Dataset()
    for elem in source:
        if elem.tag != 0x7FE00010:  # no pixel data: only the header is referenced
            ref.add(elem)
    for key, value in _PATIENT_STUDY_DEFAULTS.items():
        if key not in ref:
            setattr(ref, key, value)
    for key in ("StudyInstanceUID", "SeriesInstanceUID"):
        if key not in ref:
            setattr(ref, key, hd.UID())
    if "Modality" not in ref:
        ref.Modality = "OT"
    return ref


def findings_sidecar(pred: Prediction, source: Dataset, seg: Any) -> dict:
    """The findings as JSON, keyed by the source's and the SEG's UIDs."""
    return {
        "source": {
            "SOPClassUID": str(source.SOPClassUID),
            "SOPInstanceUID": str(source.SOPInstanceUID),
            "StudyInstanceUID": str(source.get("StudyInstanceUID", "")),
            "SeriesInstanceUID": str(source.get("SeriesInstanceUID", "")),
        },
        "segmentation": {
            "SOPInstanceUID": str(seg.SOPInstanceUID),
            "SeriesInstanceUID": str(seg.SeriesInstanceUID),
            "segments": [str(s.SegmentLabel) for s in seg.SegmentSequence],
        },
        **pred.to_dict(),
    }


def write_dicom_result(
    pred: Prediction, source: Dataset, path: Path, model: Model | None = None
) -> tuple[Path, Path]:
    """Write ``path`` (the SEG) and ``path`` with ``.json`` instead of ``.seg.dcm`` (the
    findings); both paths back."""
    seg = segmentation_dataset(pred, source, model)
    path = Path(path)
    sidecar = path.with_name(path.name.removesuffix(".seg.dcm") + ".json")
    atomic_write(path, lambda fh: seg.save_as(fh, enforce_file_format=True), shown=path)
    atomic_write_text(sidecar, json.dumps(findings_sidecar(pred, source, seg), indent=2))
    return path, sidecar
