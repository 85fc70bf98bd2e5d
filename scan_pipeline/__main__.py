from scan_pipeline.cli import run

run()
