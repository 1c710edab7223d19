#!/usr/bin/env python
"""Screenshot of the `s2t-hf serve` page after it recognised a clip, in headless Chromium.

    python scripts/page_screenshot.py outputs/quickstart data/quickstart/clips/festival_kal_diphone/hydroxyzine.wav \
        -o docs/serve-page.png
"""

import argparse

from s2t_hf import S2T
from s2t_hf.serving import create_app
from s2t_hf.serving.browser import chromium_driver, recognise_in_page
from s2t_hf.serving.server import BackgroundServer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("audio")
    parser.add_argument("-o", "--output", default="docs/serve-page.png")
    args = parser.parse_args()
    driver = chromium_driver()
    try:
        with BackgroundServer(create_app(S2T.from_pretrained(args.model))) as url:
            print(f"the page shows: {recognise_in_page(driver, url, args.audio)}")
            driver.save_screenshot(args.output)
    finally:
        driver.quit()
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
