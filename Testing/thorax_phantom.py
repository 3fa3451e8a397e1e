"""Synthetic thorax phantom: a CT series (DICOM) + RTSTRUCT with known lungs.

The anatomy is defined analytically in patient space (LPS, mm; +x is the patient's
left, +y posterior, +z superior), so its ground truth exists at every point and any
grid (size, spacing, orientation) can be rendered from it. Anatomy is random but
seeded: body and fat, ribs, spine with canal and cord, aerated lungs with vessels,
trachea and main bronchi (not lung, as in RTOG 1106), heart, aorta, esophagus, liver
under the right dome, and a couch. The right lung is larger and its dome higher, as
in people.

As a command:  python Testing/thorax_phantom.py --out DIR --cases 4
writes DIR/dicom/<patient>/<study>/{CT,RTSTRUCT}/ (the LCTSC layout) and
DIR/truth/<patient>_<structure>.nrrd.
"""
from __future__ import annotations

import argparse
import datetime
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "LungAutoSeg"))

from LungAutoSegLib.dicom_io import DicomCT  # noqa: E402
from LungAutoSegLib.dicom_scan import CT_IMAGE_STORAGE  # noqa: E402
from LungAutoSegLib.image_io import write_volume  # noqa: E402
from LungAutoSegLib.rtstruct import write_rtstruct  # noqa: E402
from LungAutoSegLib.volume import Volume, affine_from_itk  # noqa: E402

STRUCTURES = ("Lung_R", "Lung_L", "Heart", "Esophagus", "SpinalCord")
HU = {"air": -1000, "lung": -850, "fat": -100, "soft": 40, "blood": 45, "liver": 60,
      "bone": 700, "marrow": 250, "cord": 35, "csf": 15, "couch": 250, "foam": -850}


def _rotation(axis: str, degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    a, b = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}[axis]
    matrix = np.eye(3)
    matrix[a, a], matrix[a, b], matrix[b, a], matrix[b, b] = c, -s, s, c
    return matrix


ORIENTATIONS = {
    # columns: the directions of the i, j, k axes in LPS (always a proper rotation, so
    # that k is row x column as DICOM requires)
    "axial": np.eye(3),
    "flipped": np.diag([-1.0, 1.0, -1.0]),  # x flipped: rows run right-to-left
    "oblique": _rotation("z", 12) @ _rotation("x", 9) @ _rotation("y", -7),
}


@dataclass
class Tube:
    start: np.ndarray
    end: np.ndarray
    radius: float


@dataclass
class Anatomy:
    """Random but seeded shape parameters, all in mm."""

    seed: int
    shift: np.ndarray  # of the whole body in x, y
    yaw: float  # rotation of the body about z, degrees
    body: tuple[float, float]  # semi-axes in x, y
    fat: float
    lungs: dict[str, tuple[np.ndarray, np.ndarray, float]]  # centre, semi-axes, dome z
    heart: tuple[np.ndarray, np.ndarray]
    carina_z: float
    vessels: dict[str, list[Tube]]
    noise: float


def make_anatomy(seed: int) -> Anatomy:
    rng = np.random.default_rng(seed)
    u = lambda low, high: float(rng.uniform(low, high))  # noqa: E731
    body = (u(150, 175), u(105, 125))
    lung_top = u(115, 135)
    lungs = {}
    for name, side, scale, dome in (("Lung_R", -1, 1.06, u(-75, -60)), ("Lung_L", 1, 1.0, u(-95, -80))):
        semi = np.array([u(52, 60) * scale, u(78, 88), 0.0])
        centre = np.array([side * (semi[0] + u(14, 20)), u(-8, 2), 0.0])
        semi[2] = (lung_top - dome) / 1.7
        centre[2] = lung_top - semi[2]
        lungs[name] = (centre, semi, dome)
    heart = (np.array([u(15, 30), u(-45, -35), u(-75, -55)]), np.array([u(50, 60), u(42, 50), u(48, 58)]))
    carina_z = u(15, 35)
    vessels = {}
    for name, (centre, semi, dome) in lungs.items():
        hilum = np.array([centre[0] * 0.45, centre[1] + 5, carina_z - 30])
        tubes = []
        for _ in range(10):
            direction = rng.normal(size=3) * [1.0, 0.6, 1.0]
            direction[0] = abs(direction[0]) * np.sign(centre[0])
            direction /= np.linalg.norm(direction)
            tubes.append(Tube(hilum, hilum + direction * u(50, 110), u(1.5, 4.0)))
        vessels[name] = tubes
    return Anatomy(seed, np.array([u(-10, 10), u(-8, 8)]), u(-4, 4), body, u(8, 16),
                   lungs, heart, carina_z, vessels, u(8, 18))


def _segment_distance(points: np.ndarray, tube: Tube) -> np.ndarray:
    axis = tube.end - tube.start
    t = np.clip(((points - tube.start) @ axis) / (axis @ axis), 0.0, 1.0)
    closest = tube.start + t[..., None] * axis
    return np.linalg.norm(points - closest, axis=-1)


def _ellipsoid(points, centre, semi) -> np.ndarray:
    return (((points - centre) / semi) ** 2).sum(axis=-1)


def _circle(points, x, y, radius) -> np.ndarray:
    return (points[..., 0] - x) ** 2 + (points[..., 1] - y) ** 2 < radius**2


def evaluate(anatomy: Anatomy, points_lps: np.ndarray, rng=None) -> tuple[np.ndarray, dict]:
    """HU and structure masks at LPS points of any shape (..., 3)."""
    p = np.asarray(points_lps, dtype=np.float64).copy()
    p[..., :2] -= anatomy.shift
    p = p @ _rotation("z", anatomy.yaw)  # into the body's own frame
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    a, b = anatomy.body
    body_r = (x / a) ** 2 + (y / b) ** 2
    inner_r = (x / (a - anatomy.fat)) ** 2 + (y / (b - anatomy.fat)) ** 2
    body, inner = body_r < 1, inner_r < 1

    hu = np.full(x.shape, HU["air"], dtype=np.float32)
    hu[body] = HU["fat"]
    hu[inner] = HU["soft"]
    couch_top = b + 12
    hu[(y > couch_top) & (y < couch_top + 4) & (np.abs(x) < 230)] = HU["couch"]
    hu[(y >= couch_top + 4) & (y < couch_top + 40) & (np.abs(x) < 230)] = HU["foam"]
    hu[(y >= couch_top + 40) & (y < couch_top + 44) & (np.abs(x) < 230)] = HU["couch"]

    spine_y = b * 0.5
    canal_y = spine_y + 30
    vertebra = _circle(p, 0, spine_y, 18)
    posterior_elements = _circle(p, 0, canal_y, 17) & ~_circle(p, 0, canal_y, 9)
    canal = _circle(p, 0, canal_y, 9)
    cord = _circle(p, 0, canal_y, 5.5)
    rib_level = np.mod(z + 0.25 * y, 26.0)
    ribs = (inner_r > 0.80) & (inner_r < 0.90) & (rib_level < 9) & (np.abs(x) > 25)
    trachea_y = -5.0
    trachea = _circle(p, 0, trachea_y, 9) & (z > anatomy.carina_z)
    esophagus_x, esophagus_y = 6.0, 22.0
    esophagus = _circle(p, esophagus_x, esophagus_y, 7.5)
    aorta = _circle(p, 24, 35, 12)
    heart_c, heart_s = anatomy.heart
    heart = _ellipsoid(p, heart_c, heart_s) < 1

    bronchi = np.zeros(x.shape, dtype=bool)
    for name, (centre, _, _) in anatomy.lungs.items():
        carina = np.array([0.0, trachea_y, anatomy.carina_z])
        hilum = np.array([centre[0] * 0.55, centre[1] + 2, anatomy.carina_z - 28])
        bronchi |= _segment_distance(p, Tube(carina, hilum, 0)) < (7.0 if name == "Lung_R" else 6.0)

    mediastinum = (
        (_ellipsoid(p, heart_c, heart_s + 4) < 1) | _circle(p, 24, 35, 16) | _circle(p, 0, spine_y, 22)
        | _circle(p, esophagus_x, esophagus_y, 10) | _circle(p, 0, trachea_y, 12) | posterior_elements
        | ribs | (inner_r > 0.78) | (np.abs(x) < 12)
    )
    masks = {}
    for name, (centre, semi, dome) in anatomy.lungs.items():
        horizontal = ((x - centre[0]) / semi[0]) ** 2 + ((y - centre[1]) / semi[1]) ** 2
        dome_z = dome + 28 * (1 - np.clip(horizontal, 0, 1))  # the diaphragm bulges up
        shape = (_ellipsoid(p, centre, semi) < 1) & (z > dome_z) & ~mediastinum & ~bronchi
        masks[name] = shape
        hu[shape] = HU["lung"]
        inside = p[shape]  # vessels only matter inside the lung: test those points alone
        vessel = np.zeros(len(inside), dtype=bool)
        for tube in anatomy.vessels[name]:
            vessel |= _segment_distance(inside, tube) < tube.radius
        lung_hu = hu[shape]
        lung_hu[vessel] = HU["blood"]
        hu[shape] = lung_hu
        if name == "Lung_R":
            liver = inner & (z <= dome_z) & (x < 40) & (_ellipsoid(p, centre, semi * [1.3, 1.1, 1.6]) < 1)
            hu[liver & ~shape] = HU["liver"]

    hu[heart] = HU["blood"]
    hu[aorta & ~heart] = HU["blood"]
    hu[esophagus] = HU["soft"]
    hu[trachea | bronchi] = HU["air"]
    hu[vertebra] = HU["marrow"]
    hu[posterior_elements | ribs] = HU["bone"]
    hu[canal] = HU["csf"]
    hu[cord] = HU["cord"]
    masks["Heart"] = heart
    masks["Esophagus"] = esophagus & inner
    masks["SpinalCord"] = cord & inner
    if rng is not None:
        hu += rng.normal(0, anatomy.noise, size=hu.shape).astype(np.float32)
    return hu, masks


def make_grid(shape_ijk=(128, 128, 48), spacing=(2.8, 2.8, 5.0), orientation="axial",
              centre=(0.0, 15.0, 0.0)) -> Volume:
    """An empty grid of the given size, spacing and orientation, centred on the thorax."""
    direction = ORIENTATIONS[orientation]
    shape_ijk, spacing = np.asarray(shape_ijk), np.asarray(spacing, dtype=np.float64)
    half_extent = direction @ ((shape_ijk - 1) * spacing / 2)
    origin = np.asarray(centre) - half_extent
    array = np.zeros(tuple(shape_ijk[::-1]), dtype=np.int16)
    return Volume(array, affine_from_itk(spacing, origin, direction))


@dataclass
class Phantom:
    ct: Volume  # int16 HU
    masks: dict[str, np.ndarray]  # bool, on the CT grid
    anatomy: Anatomy


def render(anatomy: Anatomy, grid: Volume, chunk_slices: int = 8) -> Phantom:
    """Render HU and ground-truth masks at the grid's voxel centres."""
    rng = np.random.default_rng(anatomy.seed + 1)
    hu = np.empty(grid.array.shape, dtype=np.int16)
    masks = {name: np.zeros(grid.array.shape, dtype=bool) for name in STRUCTURES}
    for start in range(0, grid.array.shape[0], chunk_slices):
        part = slice(start, start + chunk_slices)
        values, chunk_masks = evaluate(anatomy, grid.voxel_centres_lps(part), rng)
        hu[part] = np.clip(np.round(values), -1024, 3071)
        for name in STRUCTURES:
            masks[name][part] = chunk_masks[name]
    return Phantom(grid.with_array(hu), masks, anatomy)


def write_ct_series(ct: Volume, folder: Path, patient_id: str, study_uid: str,
                    descending: bool = False) -> DicomCT:
    """Write a CT volume as DICOM slices (stored value = HU + 1024, intercept -1024)."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid, frame_uid = generate_uid(), generate_uid()
    spacing, direction = ct.spacing, ct.direction
    now = datetime.datetime(2026, 1, 1, 9, 0, 0)
    nk = ct.array.shape[0]
    datasets = []
    for k in range(nk):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CT_IMAGE_STORAGE, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID, ds.PatientName = "CT", patient_id, f"Phantom^{patient_id}"
        ds.PatientBirthDate, ds.PatientSex = "", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.StudyDate = ds.SeriesDate = now.strftime("%Y%m%d")
        ds.StudyTime = ds.SeriesTime = now.strftime("%H%M%S")
        ds.StudyID, ds.SeriesNumber, ds.AccessionNumber = "1", 2, ""
        ds.SeriesDescription = "LungAutoSeg thorax phantom"
        ds.Manufacturer = "LungAutoSeg phantom"
        ds.InstanceNumber = nk - k if descending else k + 1
        ds.ImagePositionPatient = [float(v) for v in ct.to_lps([0, 0, k])]
        ds.ImageOrientationPatient = [float(v) for v in np.concatenate([direction[:, 0], direction[:, 1]])]
        ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]  # between rows, between columns
        ds.SliceThickness = float(spacing[2])
        ds.Rows, ds.Columns = ct.array.shape[1:]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.PixelData = (ct.array[k].astype(np.int32) + 1024).astype(np.int16).tobytes()
        # file names follow InstanceNumber, so "descending" also reverses the file order
        ds.save_as(folder / f"CT.{ds.InstanceNumber:04d}.dcm", enforce_file_format=True)
        datasets.append(ds)
    for ds in datasets:
        del ds.PixelData
    return DicomCT(ct, datasets)


def write_case(root: Path, patient_id: str, phantom: Phantom, descending: bool = False,
               roi_names: dict[str, str] | None = None, layout: str = "lctsc") -> Path:
    """DICOM CT + RTSTRUCT of one phantom; returns the patient folder.

    ``roi_names`` renames structures in the RTSTRUCT (to exercise alias matching).
    ``layout`` "lctsc" puts CT and RTSTRUCT in sibling series folders; "flat" in one.
    """
    study_uid = generate_uid()
    patient = root / patient_id
    study = patient / f"study-{study_uid[-8:]}"
    ct_folder = study / "CT" if layout == "lctsc" else study
    rt_folder = study / "RTSTRUCT" if layout == "lctsc" else study
    dicom_ct = write_ct_series(phantom.ct, ct_folder, patient_id, study_uid, descending)
    rt_folder.mkdir(parents=True, exist_ok=True)
    names = roi_names or {}
    write_rtstruct(dicom_ct, {names.get(n, n): phantom.masks[n] for n in STRUCTURES},
                   rt_folder / "RS.phantom.dcm", series_description="phantom ground truth",
                   generation_algorithm="MANUAL")
    return patient


def write_truth(folder: Path, patient_id: str, phantom: Phantom) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, mask in phantom.masks.items():
        write_volume(phantom.ct.with_array(mask.astype(np.uint8)), folder / f"{patient_id}_{name}.nrrd")


def write_nifti_dataset(out: Path, seeds, structures=("Lung_R", "Lung_L"), folds: int = 2,
                        **grid) -> Path:
    """Phantom cases straight to images/, labels/ (NIfTI, label n = n-th structure) + dataset.csv.

    A shortcut past DICOM for training tests (the DICOM -> export path is tested on its own);
    fold = position % folds, so every fold holds cases.
    """
    rows = ["case,patient,image,label,fold"]
    for folder in ("images", "labels"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    for position, seed in enumerate(seeds):
        phantom = render(make_anatomy(seed), make_grid(**grid))
        case = f"PHANTOM-{seed:03d}"
        labels = np.zeros(phantom.ct.array.shape, np.uint8)
        for value, name in enumerate(structures, start=1):
            labels[phantom.masks[name]] = value
        write_volume(phantom.ct, out / "images" / f"{case}.nii.gz")
        write_volume(phantom.ct.with_array(labels), out / "labels" / f"{case}.nii.gz")
        rows.append(f"{case},{case},images/{case}.nii.gz,labels/{case}.nii.gz,{position % folds}")
    (out / "dataset.csv").write_text("\n".join(rows) + "\n")
    return out / "dataset.csv"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0, help="seed of the first case")
    parser.add_argument("--shape", type=int, nargs=3, default=(128, 128, 48), metavar=("I", "J", "K"))
    parser.add_argument("--spacing", type=float, nargs=3, default=(2.8, 2.8, 5.0), metavar=("SI", "SJ", "SK"))
    parser.add_argument("--orientation", choices=sorted(ORIENTATIONS), default="axial")
    parser.add_argument("--descending", action="store_true", help="number slices from the top down")
    args = parser.parse_args(argv)
    for n in range(args.cases):
        patient_id = f"PHANTOM-{args.seed + n:03d}"
        if (args.out / "dicom" / patient_id).exists():
            print(f"{patient_id}: exists, kept")  # a re-run adds no second CT to a patient
            continue
        phantom = render(make_anatomy(args.seed + n), make_grid(args.shape, args.spacing, args.orientation))
        write_case(args.out / "dicom", patient_id, phantom, args.descending)
        write_truth(args.out / "truth", patient_id, phantom)
        print(f"{patient_id}: {args.out / 'dicom' / patient_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
