"""Face test data for MOSIP's ABIS testing kit (its sample data has no faces).

Writes, into a checkout of mosip/abis-testing-kit, the persona data its sample test cases name
(each person a fresh referenceId; "duplicates" are other photos of the same person) and one
face CBEFF per person (ISO/IEC 19794-5 with lossless JPEG 2000), plus the kit's settings for a
local run. For conformance runs only (see README, MOSIP ABIS).

    python -m tests.support.mosip_kit_data KIT_DIR FACES_DIR
"""

from __future__ import annotations

import argparse
import json
import shutil
import uuid
from pathlib import Path

from tests.support.mosip import cbeff_from_photo

# person in the kit's sample test cases -> a photo (same folder = same person)
PHOTOS = {
    "person1": "Abel_Pacheco/Abel_Pacheco_0001.jpg",
    "person4": "Abdoulaye_Wade/Abdoulaye_Wade_0001.jpg",
    "person5": "Adrien_Brody/Adrien_Brody_0002.jpg",
    "person5_duplicate_1": "Adrien_Brody/Adrien_Brody_0003.jpg",
    "person6": "Abdullah_Gul/Abdullah_Gul_0001.jpg",
    "person6_duplicate_1": "Abdullah_Gul/Abdullah_Gul_0006.jpg",
    "person6_duplicate_2": "Abdullah_Gul/Abdullah_Gul_0007.jpg",
    "person7": "Adam_Sandler/Adam_Sandler_0001.jpg",
    "person7_duplicate_1": "Adam_Sandler/Adam_Sandler_0002.jpg",
    "person7_duplicate_2": "Adam_Sandler/Adam_Sandler_0003.jpg",
    "person9": "Aicha_El_Ouafi/Aicha_El_Ouafi_0001.jpg",
    "person10": "Abid_Hamid_Mahmud_Al-Tikriti/Abid_Hamid_Mahmud_Al-Tikriti_0001.jpg",
    "person11": "Abdullah/Abdullah_0001.jpg",
}


def write(kit: Path, faces: Path) -> None:
    store = kit / "src" / "store"
    store.mkdir(parents=True, exist_ok=True)
    personas = json.loads((kit / "sample_data" / "persona_data.json").read_text())
    for persona in personas:
        photo = PHOTOS.get(persona["name"])
        if photo is None:
            continue  # the kit's own ids: unknown, empty or never inserted on purpose
        persona["reference_id"] = str(uuid.uuid4())
        (store / f"{persona['reference_id']}.xml").write_bytes(cbeff_from_photo(faces / "lfw" / photo))
    (store / "persona_data.json").write_text(json.dumps(personas, indent=2))
    shutil.copy(kit / "sample_data" / "test_cases.json", store / "test_cases.json")
    settings = {
        "atk.queue.host": "http://127.0.0.1:8161/",
        "atk.queue.user": "admin",
        "atk.queue.password": "admin",
        "atk.queue.send_address": "mosip-to-abis",
        "atk.queue.consume_address": "abis-to-mosip",
        "atk.queue.client_id": "atk",
        "atk.app.callback_url": "http://127.0.0.1:8000/abis/cbeff/",
        "atk.app.abis_response_timeout": "30",
        "atk.app.abis_threshold": "60",
    }
    (kit / "src" / "config" / "settings.json").write_text(json.dumps(settings, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kit", type=Path)
    parser.add_argument("faces", type=Path)
    args = parser.parse_args()
    write(args.kit, args.faces)
