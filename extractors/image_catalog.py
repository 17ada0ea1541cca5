"""A small captioned image catalog built from the sample images scikit-image ships.

The offline corpus has no images of its own; these public-domain / CC0 photographs (see scikit-image's
`skimage/data/_fetchers.py` for each one's origin) give `image_search` and the corpus pages real,
decodable pictures. Files are read from the installed package folder; `skimage.data` is not imported.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from schemas.errors import ConfigurationError

CORPUS_HOST = "corpus.groundgen.invalid"
CORPUS_BASE_URL = f"http://{CORPUS_HOST}"

CONTENT_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


@dataclass(frozen=True)
class CatalogImage:
    name: str  # the URL name, e.g. "hubble_deep_field.jpg"
    caption: str
    keywords: tuple[str, ...]
    articles: tuple[str, ...]  # corpus article titles this image illustrates, best first
    path: Path
    width: int = 0
    height: int = 0

    @property
    def url(self) -> str:
        """The canonical corpus URL (the same whatever port the corpus server listens on)."""
        return image_url(self.name)

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.path.suffix.lower()]

    @property
    def search_text(self) -> str:
        return " ".join((self.caption, *self.keywords, *self.articles))


def image_url(name: str) -> str:
    return f"{CORPUS_BASE_URL}/images/{name}"


# file name -> (caption, keywords, corpus articles). Hand-written from scikit-image's own notes.
CATALOG_ENTRIES: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "astronaut.png": (
        "Astronaut Eileen Collins, NASA portrait",
        ("astronaut", "Eileen Collins", "NASA", "space shuttle commander", "portrait", "woman", "flag"),
        ("Astronaut", "Space Shuttle", "NASA", "Spaceflight"),
    ),
    "camera.png": (
        "Photographer with a camera on a tripod, black and white photograph",
        ("camera", "photographer", "tripod", "photography", "man", "grayscale"),
        ("Camera", "Photography"),
    ),
    "coffee.png": (
        "Cup of coffee on a saucer with a spoon, espresso bar",
        ("coffee", "cup", "saucer", "espresso", "latte art", "drink", "beverage"),
        ("Coffee", "Cup"),
    ),
    "chelsea.png": (
        "Chelsea the tabby cat, close-up portrait",
        ("cat", "tabby", "domestic cat", "pet", "animal", "whiskers"),
        ("Cat", "Animal"),
    ),
    "rocket.jpg": (
        "SpaceX Falcon 9 rocket launching the DSCOVR satellite from Cape Canaveral",
        ("rocket", "launch", "Falcon 9", "SpaceX", "DSCOVR", "satellite", "Cape Canaveral", "spaceflight"),
        ("Rocket", "Spaceflight"),
    ),
    "horse.png": (
        "Black silhouette of a horse",
        ("horse", "silhouette", "animal", "equine", "clipart"),
        ("Horse", "Animal"),
    ),
    "moon.png": (
        "Surface of the Moon with craters, telescope image",
        ("moon", "lunar surface", "craters", "impact crater", "natural satellite", "astronomy"),
        ("Moon", "Impact crater"),
    ),
    "coins.png": (
        "Several old coins on a gray background",
        ("coins", "coin", "money", "currency", "numismatics"),
        ("Coin", "Money", "Currency"),
    ),
    "hubble_deep_field.jpg": (
        "Hubble Deep Field, galaxies, astronomy: the Hubble Space Telescope's eXtreme Deep Field",
        ("Hubble", "deep field", "galaxies", "galaxy", "universe", "space telescope", "NASA", "astronomy"),
        ("Galaxy", "Hubble Space Telescope", "Observable universe", "Universe", "Astronomy"),
    ),
    "retina.jpg": (
        "Fundus photograph of a normal human retina, left eye",
        ("retina", "eye", "fundus", "ophthalmology", "blood vessels", "optic disc", "medical image"),
        ("Human eye", "Eye", "Ophthalmology"),
    ),
    "page.png": (
        "Scanned page of printed text",
        ("page", "printed text", "scan", "book", "printing", "document"),
        ("Printing", "Book", "Writing"),
    ),
    "text.png": (
        "Hand-written mathematical formulas on paper",
        ("handwriting", "formulas", "equations", "mathematics", "writing", "text"),
        ("Writing", "Mathematics"),
    ),
    "brick.png": (
        "Section of a brick wall, masonry texture",
        ("brick", "brick wall", "masonry", "wall", "texture", "building material"),
        ("Brick", "Masonry", "Wall"),
    ),
    "grass.png": (
        "Close-up of grass blades, texture",
        ("grass", "lawn", "grasses", "plants", "texture"),
        ("Poaceae",),
    ),
    "gravel.png": (
        "Gravel, small crumbled stones, texture",
        ("gravel", "stones", "pebbles", "rock", "texture"),
        ("Gravel", "Rock (geology)"),
    ),
    "cell.png": (
        "Quantitative phase image of a biological cell under a microscope",
        ("cell", "biological cell", "microscopy", "microscope", "phase imaging"),
        ("Cell (biology)", "Microscope", "Optical microscope"),
    ),
    "ihc.png": (
        "Immunohistochemistry staining of colonic glands, hematoxylin counterstain, microscope",
        ("immunohistochemistry", "IHC", "tissue", "colon", "staining", "microscopy", "protein", "pathology"),
        ("Tissue (biology)", "Large intestine", "Protein"),
    ),
    "clock_motion.png": (
        "Wall clock photographed with horizontal motion blur",
        ("clock", "wall clock", "time", "motion blur"),
        ("Clock", "Time"),
    ),
    "motorcycle_left.png": (
        "Motorcycle in a workshop, stereo left view",
        ("motorcycle", "motorbike", "vehicle", "stereo"),
        ("Motorcycle",),
    ),
    "color.png": (
        "Color wheel: hues around a disc, white at the centre",
        ("color", "colour", "color wheel", "hue", "spectrum"),
        ("Color",),
    ),
}


def skimage_data_dir() -> Path:
    """scikit-image's data folder, found without importing skimage.data."""
    try:
        spec = importlib.util.find_spec("skimage")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError("the offline image catalog needs scikit-image: pip install scikit-image")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image  # lazily: only the header is read

    with Image.open(path) as image:
        return image.size


@cache
def load_catalog(data_dir: Path | None = None) -> tuple[CatalogImage, ...]:
    """The catalog entries whose file is installed, in name order."""
    folder = data_dir or skimage_data_dir()
    entries = []
    for name in sorted(CATALOG_ENTRIES):
        path = folder / name
        if not path.is_file():
            continue
        caption, keywords, articles = CATALOG_ENTRIES[name]
        width, height = _image_size(path)
        entries.append(CatalogImage(name, caption, keywords, articles, path, width, height))
    if not entries:
        raise ConfigurationError(f"no catalog images found in {folder}: reinstall scikit-image")
    return tuple(entries)
