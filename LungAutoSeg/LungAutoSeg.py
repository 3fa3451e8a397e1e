"""LungAutoSeg: Slicer scripted module (thin; all real work is in LungAutoSegLib).

At this stage the module registers itself and shows the engine's version; the
"Segment right lung" widget and logic arrive with the inference engine.
"""
import qt
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleWidget


class LungAutoSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "LungAutoSeg"
        self.parent.categories = ["Segmentation"]
        self.parent.contributors = ["LungAutoSeg developers"]
        self.parent.helpText = (
            "AI auto-contouring of the right lung on radiotherapy planning CT. "
            "Not clinically validated: every contour must be reviewed."
        )
        self.parent.acknowledgementText = (
            "Builds on 3D Slicer, SlicerRT, MONAI, PyTorch, pydicom and rt-utils."
        )


class LungAutoSegWidget(ScriptedLoadableModuleWidget):
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        from LungAutoSegLib import __version__

        label = qt.QLabel(
            f"LungAutoSeg engine {__version__}: CT and RTSTRUCT I/O are ready; "
            "segmentation arrives with the inference engine."
        )
        label.wordWrap = True
        self.layout.addWidget(label)
        self.layout.addStretch(1)
