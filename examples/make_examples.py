"""Write the digit examples: ``digit.png`` (an 8×8 grey PNG) and ``digit.npy`` (8×8 float32 in
[0, 1]), both from the test split of scikit-learn's bundled digits, the data the shipped
``digits-hycas`` model was trained and measured on.

Run from the repository root: ``python examples/make_examples.py``. ``CT_small.dcm`` is not
made here: it is copied from pydicom's test data (see ``examples/README.md``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from models.data import load_dataset

EXAMPLES = Path(__file__).resolve().parent
PNG_INDEX = 22
"""Test image 22 (a 6) goes to ``digit.png``: one the model certifies with a wide margin."""
NPY_INDEX = 19
"""Test image 19 (a 7) to ``digit.npy``."""


def write_digit_examples(folder: Path = EXAMPLES) -> None:
    """``digit.png`` and ``digit.npy`` in ``folder``."""
    test = load_dataset("digits", split="test")
    png_pixels = np.rint(test.images[PNG_INDEX, 0].numpy() * 255).astype(np.uint8)
    Image.fromarray(png_pixels, mode="L").save(folder / "digit.png", optimize=True)
    np.save(folder / "digit.npy", test.images[NPY_INDEX, 0].numpy().astype(np.float32))
    for name, index in (("digit.png", PNG_INDEX), ("digit.npy", NPY_INDEX)):
        print(f"wrote {folder / name}: test image {index}, label {int(test.labels[index])}")


if __name__ == "__main__":
    write_digit_examples()
