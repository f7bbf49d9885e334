"""What several test modules share: tiny model builders and trainers (`models`), the integer
runs of a .tflite file (`tflite`) and the colour classifier of the metadata and MediaPipe
tests (`colours`). Test modules import from here, never from one another; the session-scoped
fixtures that train these models once per run are in tests/conftest.py."""
