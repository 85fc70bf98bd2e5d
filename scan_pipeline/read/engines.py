"""OCR engines behind one small protocol, so stages can be tested with fakes.

Tesseract runs through its C API (tesserocr: one engine per worker, no process per cell); where
tesserocr cannot load, pytesseract runs the `tesseract` command instead (slower, same results).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from scan_pipeline.core.errors import MissingDependencyError
from scan_pipeline.core.ocr import OcrEngine, OcrResult

TESSDATA_DIRS = (
    "/usr/share/tesseract-ocr/5/tessdata",
    "/usr/share/tesseract-ocr/4.00/tessdata",
    "/usr/share/tessdata",
    "/usr/local/share/tessdata",
)


def find_tessdata(lang: str = "fra") -> str:
    candidates = [os.environ.get("TESSDATA_PREFIX", ""), *TESSDATA_DIRS]
    for d in candidates:
        if d and (Path(d) / f"{lang}.traineddata").exists():
            return d
    raise MissingDependencyError(
        f"Tesseract's language data for {lang!r} is not installed",
        hint=f"apt-get install tesseract-ocr tesseract-ocr-{lang} (or run `make install`)")


class TesserocrEngine:
    """Tesseract through its API; one instance per worker (it is not thread-safe)."""

    name = "tesseract"

    def __init__(self, lang: str = "fra"):
        import tesserocr

        self._tesserocr = tesserocr
        path = find_tessdata(lang)
        self._api = tesserocr.PyTessBaseAPI(path=path, lang=lang, psm=tesserocr.PSM.SINGLE_LINE,
                                            oem=tesserocr.OEM.LSTM_ONLY)
        self._whitelist: str | None = None

    def read_line(self, image: np.ndarray, whitelist: str | None = None) -> OcrResult:
        if whitelist != self._whitelist:
            self._api.SetVariable("tessedit_char_whitelist", whitelist or "")
            self._whitelist = whitelist
        if image.ndim == 2 and image.dtype == np.uint8:  # gray pixels straight in, no image conversion
            pixels = np.ascontiguousarray(image)
            self._api.SetImageBytes(pixels.tobytes(), pixels.shape[1], pixels.shape[0], 1, pixels.shape[1])
        else:
            self._api.SetImage(Image.fromarray(image))
        text = self._api.GetUTF8Text().strip()
        confidences = [c for c in self._api.AllWordConfidences() if c >= 0]
        conf = float(np.mean(confidences)) / 100.0 if confidences and text else 0.0
        return OcrResult(text, conf, self._words() if text else ())

    def _words(self) -> tuple[tuple[str, int, int], ...]:
        words = []
        it = self._api.GetIterator()
        level = self._tesserocr.RIL.WORD
        while it is not None:
            word, box = it.GetUTF8Text(level), it.BoundingBox(level)
            if word and box:
                words.append((word, box[0], box[2]))
            if not it.Next(level):
                break
        return tuple(words)

    def close(self) -> None:
        self._api.End()


class PytesseractEngine:
    """The `tesseract` command, one process per call: the fallback where tesserocr cannot load."""

    name = "tesseract-cli"

    def __init__(self, lang: str = "fra"):
        if not shutil.which("tesseract"):
            raise MissingDependencyError("the tesseract command is not installed",
                                         hint="apt-get install tesseract-ocr tesseract-ocr-fra")
        find_tessdata(lang)
        import pytesseract

        self._pt = pytesseract
        self._lang = lang

    def read_line(self, image: np.ndarray, whitelist: str | None = None) -> OcrResult:
        config = "--psm 7 --oem 1"
        if whitelist:
            config += f" -c tessedit_char_whitelist={whitelist}"
        data = self._pt.image_to_data(Image.fromarray(image), lang=self._lang, config=config,
                                      output_type=self._pt.Output.DICT)
        words = [(w, float(c), int(x), int(x) + int(dx)) for w, c, x, dx in
                 zip(data["text"], data["conf"], data["left"], data["width"]) if w.strip() and float(c) >= 0]
        if not words:
            return OcrResult("", 0.0)
        return OcrResult(" ".join(w[0] for w in words), float(np.mean([w[1] for w in words])) / 100.0,
                         tuple((w, x0, x1) for w, _, x0, x1 in words))

    def close(self) -> None:
        pass


def tesseract_engine(lang: str = "fra") -> OcrEngine:
    """The fastest Tesseract binding that loads here."""
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")  # one thread per worker: workers are the parallelism
    try:
        return TesserocrEngine(lang)
    except ImportError:
        return PytesseractEngine(lang)
    except RuntimeError:  # tesserocr could not initialise with this tessdata
        return PytesseractEngine(lang)


# --- the second engine: PP-OCRv4 recognition through onnxruntime ----------------------------------

RAPIDOCR_PACKAGE = "rapidocr_onnxruntime"
RAPIDOCR_REC_MODEL = "models/ch_PP-OCRv4_rec_infer.onnx"
RAPIDOCR_INSTALL = "pip install onnxruntime && pip install --no-deps rapidocr-onnxruntime==1.4.4"


def rapidocr_model_path() -> Path:
    """The recognition model shipped in the rapidocr-onnxruntime wheel, found without importing the
    package (its __init__ pulls in the detection stack and the GUI OpenCV, which we do not use)."""
    import importlib.util

    spec = importlib.util.find_spec(RAPIDOCR_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError("the second name reader (rapidocr's recognition model) is not installed",
                                     hint=RAPIDOCR_INSTALL)
    path = Path(next(iter(spec.submodule_search_locations))) / RAPIDOCR_REC_MODEL
    if not path.exists():
        raise MissingDependencyError(f"rapidocr's recognition model is missing ({path})", hint=RAPIDOCR_INSTALL)
    return path


class RapidRecEngine:
    """PP-OCRv4 text-line recognition (the model of rapidocr-onnxruntime), recognition only: a cell is
    already one line, so no detection and no angle classifier. One instance per worker.

    Besides the best path it gives the per-frame character probabilities (`frames`), so that a
    reader can score any candidate string against what the model saw (CTC likelihood).
    """

    name = "rapidocr"
    STRIDE = 8  # input columns per output frame

    def __init__(self, threads: int = 1, height: int = 28, min_width: int = 186):
        # The model was trained at 48 px high, padded to 320 wide; handwriting in our cells reads better
        # and twice as fast at 28 px (padded to the same 6.6:1), measured on real crops (bench_names.py).
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise MissingDependencyError("onnxruntime is not installed", hint=RAPIDOCR_INSTALL) from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = ort.InferenceSession(str(rapidocr_model_path()), options,
                                             providers=["CPUExecutionProvider"])
        chars = self._session.get_modelmeta().custom_metadata_map["character"].splitlines()
        self.charset: tuple[str, ...] = ("", *chars, " ")  # CTC blank first, space last (as PaddleOCR)
        self.index = {c: i for i, c in enumerate(self.charset) if c}
        self._input = self._session.get_inputs()[0].name
        self.height = height
        self._min_width = min_width

    def _tensor(self, image: np.ndarray) -> np.ndarray:
        import cv2

        h, w = image.shape[:2]
        width = max(1, int(np.ceil(self.height * w / max(h, 1))))
        resized = cv2.resize(image, (width, self.height), interpolation=cv2.INTER_AREA if h > self.height
                             else cv2.INTER_LINEAR).astype(np.float32)
        padded = np.zeros((self.height, max(width, self._min_width)), np.float32)
        padded[:, :width] = resized / 127.5 - 1.0  # the padding stays 0, as the model was trained
        return np.repeat(padded[None, None], 3, axis=1)

    def frame_at(self, x: float, image_height: int) -> int:
        """The frame that sees column x of an image of that height (the model's frames are 8 columns
        of its input apart)."""
        return int(round(x * self.height / max(image_height, 1) / self.STRIDE))

    def frames(self, image: np.ndarray) -> np.ndarray:
        """Per-frame class probabilities (T, classes) of a gray line image (dark ink on white)."""
        probs: np.ndarray = self._session.run(None, {self._input: self._tensor(image)})[0][0]
        return probs

    def decode(self, probs: np.ndarray) -> OcrResult:
        """Best path: argmax per frame, repeats merged, blanks dropped; confidence = mean char prob."""
        best = probs.argmax(axis=1)
        keep = (best != 0) & np.r_[True, best[1:] != best[:-1]]
        text = "".join(self.charset[i] for i in best[keep])
        conf = float(probs.max(axis=1)[keep].mean()) if keep.any() else 0.0
        return OcrResult(text.strip(), conf if text.strip() else 0.0)

    def read_line(self, image: np.ndarray, whitelist: str | None = None) -> OcrResult:
        return self.decode(self.frames(image))

    def close(self) -> None:
        pass


def rapid_engine(threads: int = 1) -> RapidRecEngine | None:
    """The second name reader, or None when it is not installed (names then use Tesseract alone)."""
    try:
        return RapidRecEngine(threads)
    except MissingDependencyError:
        return None
