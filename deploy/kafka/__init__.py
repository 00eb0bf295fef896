"""Package data, not code: the Maven project that fetches Apache Kafka (``pom.xml``).

Installed as ``prodcat.kafka.maven`` so `prodcat broker --engine kafka --fetch` works from a
wheel as well as from the checkout (prodcat/kafka/jars.py).
"""
