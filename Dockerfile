# speechattn audio -> image Gradio app (CPU). Build and run:
#   docker build -t speechattn-app .
#   docker run -p 7860:7860 -v /path/to/models:/models speechattn-app
# /models/audio2clip: a folder written by `speechattn audio2clip train`;
# /models/sd: a Stable Diffusion pipeline folder (e.g. a local copy of stabilityai/stable-diffusion-2-1).
# Override with: docker run ... speechattn-app --model /models/x --pipeline /models/y
FROM python:3.11-slim

# ffmpeg: decoding of browser microphone recordings (webm/ogg); libsndfile: soundfile.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg libsndfile1 \
    && rm -rf /var/lib/apt/lists/*

ENV PIP_NO_CACHE_DIR=1 \
    GRADIO_ANALYTICS_ENABLED=False \
    PYTHONUNBUFFERED=1

WORKDIR /app
COPY pyproject.toml README.md constraints.txt ./
COPY src ./src
# CPU torch first (pinned by constraints.txt), then the package with the clip extra.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
    && pip install -c constraints.txt ".[clip]"

EXPOSE 7860
ENTRYPOINT ["speechattn", "audio2clip", "app", "--host", "0.0.0.0", "--port", "7860"]
CMD ["--model", "/models/audio2clip", "--pipeline", "/models/sd"]
