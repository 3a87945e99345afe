"""`python -m face_dedup_api.capture_install` (run by `make capture`): install the capture page's
detector from the installed model pack. Separate from capture.py so that running it does not
register the API's routes twice."""

from __future__ import annotations

from face_dedup.models.registry import get_pack
from face_dedup.settings import Settings
from face_dedup_api.capture import install_browser_detector


def main() -> None:
    settings = Settings.load()
    print(install_browser_detector(settings.models_dir, get_pack(settings.model_pack)))


if __name__ == "__main__":
    main()
