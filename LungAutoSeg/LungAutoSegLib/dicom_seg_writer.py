"""A DICOM SEG of the contours (binary, one segment per structure, SNOMED CT coded), through
highdicom: for planning systems and archives that take SEG rather than (or beside) RTSTRUCT.
highdicom is imported only here, so the engine runs without it unless a SEG is asked for."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .dicom_io import DicomCT
from .errors import InputError
from .rtstruct import uid_source
from .structures import ANATOMICAL_STRUCTURE, STRUCTURES


def write_dicom_seg(ct: DicomCT, masks: dict[str, np.ndarray], path: str | os.PathLike, *, algorithm: str,
                    uid_key: str | None = None) -> Path:
    """One binary segment per mask (``array[k, j, i]`` on ``ct``'s grid), in ``masks``' order.
    ``uid_key``: as ``write_rtstruct``'s, the same key makes the same UIDs."""
    try:
        import highdicom as hd
        from pydicom.sr.codedict import codes
    except ImportError:
        raise InputError("a DICOM SEG needs highdicom: pip install highdicom") from None
    new_uid = uid_source(uid_key)
    labels = np.zeros(ct.volume.array.shape, np.uint8)
    descriptions = []
    for number, (name, mask) in enumerate(masks.items(), start=1):
        labels[mask] = number
        known = STRUCTURES.get(name)
        kind = known.snomed_type if known else ANATOMICAL_STRUCTURE
        description = hd.seg.SegmentDescription(
            segment_number=number, segment_label=name,
            segmented_property_category=hd.sr.CodedConcept(ANATOMICAL_STRUCTURE[1], ANATOMICAL_STRUCTURE[0],
                                                           ANATOMICAL_STRUCTURE[2]),
            segmented_property_type=hd.sr.CodedConcept(kind[1], kind[0], kind[2]),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=hd.AlgorithmIdentificationSequence(
                name="LungAutoSeg", family=codes.cid7162.ArtificialIntelligence, version=algorithm[:64]))
        if known and known.snomed_modifier:  # laterality: Right / Left
            scheme, code, meaning = known.snomed_modifier
            description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
                hd.sr.CodedConcept(code, scheme, meaning)]
        if known:
            description.RecommendedDisplayCIELabValue = list(hd.color.CIELabColor.from_rgb(*known.colour).value)
        descriptions.append(description)
    seg = hd.seg.Segmentation(
        source_images=ct.datasets, pixel_array=labels, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=new_uid("seg series"), series_number=2,
        sop_instance_uid=new_uid("seg instance"), instance_number=1, manufacturer="LungAutoSeg",
        manufacturer_model_name=algorithm[:64], software_versions=algorithm[:64], device_serial_number="0",
        series_description=f"LungAutoSeg {algorithm}"[:64], omit_empty_frames=True)
    path = Path(path)
    with atomic_path(path, overwrite=True) as temporary:
        seg.save_as(temporary)
    return path
