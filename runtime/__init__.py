"""edge-digits runtime: classify handwritten digits and numbers in photos.

Needs only onnxruntime (or onnxruntime-gpu), numpy and OpenCV.

    from runtime import DigitClassifier
    clf = DigitClassifier()                  # shipped INT8 model
    print(clf.classify_one("photo.jpg").digit)
    print(clf.read_number("row.jpg").number)
"""
from .classifier import DigitClassifier, Upload, decode_upload
from .errors import ModelError, NoDigitFound, RuntimeInputError
from .imageio import decode_image, read_image, to_uint8
from .model import DEFAULT_MODEL, DEFAULT_READER, ModelInfo, load_session
from .preprocess import DigitCrop, preprocess_digit
from .reader import NumberReader
from .results import NumberReading, Prediction


def read_number(image, classifier: "DigitClassifier | None" = None) -> NumberReading:
    """Read a row of digits with ``classifier`` (default: the shipped model)."""
    return (classifier or DigitClassifier()).read_number(image)


__all__ = [
    "DEFAULT_MODEL", "DEFAULT_READER", "DigitClassifier", "DigitCrop", "ModelError", "ModelInfo", "NoDigitFound",
    "NumberReader", "NumberReading", "Prediction", "RuntimeInputError", "Upload", "decode_image", "decode_upload",
    "load_session", "preprocess_digit", "read_image", "read_number", "to_uint8",
]
