# The Airflow image of docker-compose.yaml: the pinned Airflow plus this project's locked requirements.
FROM apache/airflow:3.3.2-python3.11
USER root
# postgresql-15 (the server programs): a point-in-time restore runs a recovery instance of the backup's version on
# the worker.
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-client-15 postgresql-15 zstd \
 && rm -rf /var/lib/apt/lists/*
USER airflow
COPY requirements.txt /requirements.txt
RUN pip install --no-cache-dir -r /requirements.txt apache-airflow-providers-celery
