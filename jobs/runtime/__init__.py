"""The Spark runtime leanscore starts or joins: session settings, the jars, driver logging."""
