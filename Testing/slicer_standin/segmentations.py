"""What Slicer's Segmentations module does at startup (C++, so not in slicer-core): register the
converter rules, without which MRML cannot copy a segment or make a closed surface."""
import slicer

_registered = False


def register_converter_rules() -> None:
    global _registered
    if not _registered:
        factory = slicer.vtkSegmentationConverterFactory.GetInstance()
        factory.RegisterConverterRule(slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule())
        factory.RegisterConverterRule(slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule())
        _registered = True
