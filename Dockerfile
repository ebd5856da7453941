# One image for web and workers. Build with `--build-arg EXTRAS=ml` for workers that run
# local teachers or training (adds torch/transformers/peft).
FROM python:3.11-slim
ARG EXTRAS=ml
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 DISTILLERY_VAR_DIR=/data
WORKDIR /app
COPY pyproject.toml README.md ./
COPY distillapp ./distillapp
COPY workers ./workers
RUN pip install --no-cache-dir ".[${EXTRAS}]"
COPY . .
RUN DJANGO_SECRET_KEY=build python manage.py collectstatic --noinput
EXPOSE 8000
CMD ["gunicorn", "distillapp.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3"]
