"""The main file for ``spark-submit``: it runs the ``leanscore`` CLI inside the submitted driver.

spark-submit needs a Python file as its primary resource; the code itself comes from the wheel
passed with ``--py-files`` (or an installed leanscore). Under spark-submit ``get_spark`` takes
the session spark-submit configured (master, jars, Delta conf) instead of starting its own.

    spark-submit [options] conf/schedulers/spark_submit_main.py score --config ... --run-date ...
"""

from leanscore.jobs.cli import main

if __name__ == "__main__":
    main()
