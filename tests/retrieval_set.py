"""A small labelled retrieval set: 200 short agent memories and 40 queries with relevance
labels, written for this project and fully deterministic (no randomness at all).

The memories mix what an agent fleet remembers: invoices, support tickets, product SKUs
and flights (records told apart by an identifier), facts about people, decisions from
meetings and operational notes. The queries are of three kinds, about equally many:

- "id": an identifier plus a few words ("INV-20931 payment status"); exact terms matter.
- "meaning": a paraphrase sharing no content word with its answer ("which nut must never
  be served to Priya?" for "Priya is allergic to peanuts"); meaning matters.
- "mixed": a name or identifier plus a paraphrase; both help.

`MEMORIES` maps a key to its text; `QUERIES` is a list of (kind, query, relevant keys).
"""

from __future__ import annotations

VENDORS = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark Industries"]
STATUSES = ["was paid in full", "is overdue", "is disputed by our finance team",
            "is pending approval", "was paid late"]


def _invoices() -> dict[str, str]:
    out = {}
    for i in range(30):
        number = 20901 + 7 * i if i % 2 else 20931 + 11 * i
        vendor = VENDORS[i % len(VENDORS)]
        status = STATUSES[(i * 3) % len(STATUSES)]
        amount = 400 + 137 * i
        out[f"inv:{number}"] = (f"Invoice INV-{number} from {vendor} for ${amount:,} "
                                f"{status}.")
    return out


COMPONENTS = [("checkout", "the payment step"), ("login", "the two-factor prompt"),
              ("search", "typing a query"), ("export", "the CSV download"),
              ("upload", "attaching a file")]


def _tickets() -> dict[str, str]:
    out = {}
    for i in range(25):
        code = f"E{1000 + 37 * i}"
        component, step = COMPONENTS[i % len(COMPONENTS)]
        out[f"ticket:{5500 + i}"] = (f"Ticket #{5500 + i}: {component} fails with error "
                                     f"{code} after {step}.")
    return out


PRODUCTS = ["blue ceramic mug, 350 ml", "steel water bottle, 750 ml", "oak desk organiser",
            "wireless mouse, graphite", "linen notebook, A5 dotted",
            "bamboo cutting board", "wool beanie, charcoal", "canvas tote bag",
            "glass teapot with infuser", "enamel camping plate"]


def _skus() -> dict[str, str]:
    out = {}
    for i in range(25):
        sku = 7700 + 31 * i
        product = PRODUCTS[i % len(PRODUCTS)]
        stock = ["restocked weekly", "low on stock", "discontinued next quarter",
                 "back-ordered until May", "stocked in the Lyon warehouse"][i % 5]
        out[f"sku:{sku}"] = f"SKU-{sku} is the {product}, {stock}."
    return out


CITIES = ["Munich", "Lisbon", "Oslo", "Toronto", "Nairobi", "Osaka", "Quito", "Tallinn",
          "Perth", "Bogota"]


def _flights() -> dict[str, str]:
    out = {}
    for i in range(20):
        number = f"LH {4400 + 13 * i}"
        city = CITIES[i % len(CITIES)]
        hour = 6 + (i * 5) % 15
        out[f"flight:{4400 + 13 * i}"] = (f"Flight {number} to {city} departs at "
                                          f"{hour:02d}:15 from gate B{10 + i}.")
    return out


PEOPLE = {
    "priya": [
        "Priya is allergic to peanuts and carries an epinephrine pen.",
        "Priya drinks oolong tea and never coffee.",
        "Priya leads the data platform team in Bangalore.",
        "Priya spends weekends bouldering at the climbing gym.",
        "Priya has two daughters who both play the violin.",
    ],
    "marco": [
        "Marco orders a double espresso every day before standup.",
        "Marco always books an aisle seat because he has long legs.",
        "Marco is vegetarian and avoids gelatin.",
        "Marco maintains the billing service and is on call this week.",
        "Marco restores vintage Vespa scooters in his garage.",
    ],
    "ada": [
        "Ada writes her notes in Markdown and hates slide decks.",
        "Ada is training for the Berlin marathon in September.",
        "Ada's dog is a greyhound called Biscuit.",
        "Ada reviews every database schema change before it ships.",
        "Ada is lactose intolerant, so oat milk for her.",
    ],
    "kenji": [
        "Kenji lives in Sapporo and works remotely on Tokyo hours.",
        "Kenji collects mechanical keyboards with tactile switches.",
        "Kenji is learning Portuguese for a trip to Brazil.",
        "Kenji prefers written updates over video calls.",
        "Kenji owns the mobile release pipeline.",
    ],
    "fatima": [
        "Fatima is fasting during Ramadan, so no lunch meetings for her.",
        "Fatima plays the oud in a community ensemble.",
        "Fatima manages vendor contracts and signs purchase orders.",
        "Fatima's birthday is on the ninth of November.",
        "Fatima gets motion sickness on boats.",
    ],
    "lars": [
        "Lars cycles forty kilometres to the office in summer.",
        "Lars is colour-blind, so charts need patterns, not just red and green.",
        "Lars speaks Swedish, German and a little Finnish.",
        "Lars runs the security incident rotation.",
        "Lars keeps bees on the roof of his building.",
    ],
    "sofia": [
        "Sofia joined as a product designer in March.",
        "Sofia sketches on an iPad with a pencil, never on paper.",
        "Sofia's partner is a paediatric nurse who works night shifts.",
        "Sofia cannot eat shellfish.",
        "Sofia grew up in Valparaiso and surfs whenever she visits home.",
    ],
    "tomas": [
        "Tomas prefers his name without the accent in emails.",
        "Tomas is the release manager for the desktop app.",
        "Tomas brews his own sour beer.",
        "Tomas has a standing desk and stands through every meeting.",
        "Tomas is afraid of flying and takes the train whenever possible.",
    ],
    "amara": [
        "Amara chairs the accessibility guild.",
        "Amara is deaf in her left ear, so sit on her right in meetings.",
        "Amara coaches a youth basketball team on Saturdays.",
        "Amara drinks only sparkling water.",
        "Amara is writing a novel set in Lagos.",
    ],
    "wei": [
        "Wei is the on-call lead for the payments API.",
        "Wei's cat is named Dumpling.",
        "Wei volunteers at the food bank every Thursday evening.",
        "Wei uses a screen reader because of low vision.",
        "Wei prefers to be called Vivian at work.",
    ],
}

DECISIONS = [
    "We decided to migrate the billing service from MySQL to PostgreSQL by the end of Q3.",
    "The team agreed to freeze new features for two weeks before the holiday release.",
    "Design reviews now happen on Tuesdays instead of Fridays.",
    "We will deprecate the v1 REST endpoints on the first of June.",
    "The mobile app drops support for Android 9 in the next release.",
    "Staging is rebuilt from scratch every night at 02:00 UTC.",
    "All new services must expose Prometheus metrics and a health endpoint.",
    "The search team will evaluate hybrid keyword and vector retrieval this quarter.",
    "Customer data may only be stored in the Frankfurt region.",
    "The offsite is moved from Lisbon to Porto because of hotel prices.",
    "Pull requests need two approvals when they touch authentication code.",
    "We chose Grafana over Datadog to keep monitoring costs down.",
    "Interns get a mentor and a starter project in their first week.",
    "The support team switches to a four-day week as a pilot in October.",
    "Backups are kept for ninety days and tested by restoring one every month.",
    "Feature flags older than six months must be removed.",
    "We will hire two more site reliability engineers in Nairobi.",
    "Quarterly planning now starts three weeks before the quarter ends.",
    "The marketing site moves to a static generator to cut hosting costs.",
    "Every incident gets a blameless postmortem within five working days.",
    "The legacy cron jobs will be replaced by a workflow scheduler.",
    "Meeting-free Wednesdays start next month for engineering.",
    "The company laptop refresh cycle is now four years instead of three.",
    "Translations for Japanese and Korean ship with the spring release.",
    "We stop printing paper receipts at the warehouse.",
    "The data retention for logs is reduced to thirty days.",
    "On-call engineers receive a stipend for each week on rotation.",
    "Expense reports above five hundred euros need a director's approval.",
    "The recommendation model is retrained every Sunday night.",
    "We adopt semantic versioning for every public library.",
]

NOTES = [
    "The office wifi password rotates on the first Monday of each month.",
    "The third-floor printer jams if you use recycled paper.",
    "Parking permits are renewed through the facilities portal in January.",
    "The coffee machine in the kitchen is descaled every Friday afternoon.",
    "Visitors must be registered at reception a day in advance.",
    "The VPN disconnects after twelve hours and needs a fresh login.",
    "The fire drill is scheduled for the second Thursday in April.",
    "Bike storage is in the basement behind the loading dock.",
    "The shared calendar for holidays is owned by the people team.",
    "Company shirts can be ordered from the intranet store until Friday.",
    "The staging database is anonymised every night from production.",
    "Our status page is hosted on a separate provider from production.",
    "The on-call phone number forwards to whoever holds the pager.",
    "Room Orion has the only projector that works with HDMI adapters.",
    "Lost badges are replaced by security within one working day.",
    "The quiet room on the fourth floor may not be booked for calls.",
    "The build cache is flushed when the compiler version changes.",
    "Quarterly all-hands are recorded and posted on the wiki.",
    "The plants in the lobby are watered by a service on Mondays.",
    "The gym discount needs a request through the benefits portal.",
]


def _build() -> dict[str, str]:
    memories: dict[str, str] = {}
    memories.update(_invoices())
    memories.update(_tickets())
    memories.update(_skus())
    memories.update(_flights())
    for person, facts in PEOPLE.items():
        for i, fact in enumerate(facts):
            memories[f"person:{person}:{i}"] = fact
    for i, text in enumerate(DECISIONS):
        memories[f"decision:{i}"] = text
    for i, text in enumerate(NOTES):
        memories[f"note:{i}"] = text
    return memories


MEMORIES = _build()

QUERIES: list[tuple[str, str, list[str]]] = [
    # -- identifiers: the exact term decides --------------------------------------------
    ("id", "INV-20931 payment status", ["inv:20931"]),
    ("id", "what is the amount on INV-21151", ["inv:21151"]),
    ("id", "INV-20992 vendor", ["inv:20992"]),
    ("id", "is INV-21020 paid", ["inv:21020"]),
    ("id", "error E1074", ["ticket:5502"]),
    ("id", "which component raises E1629", ["ticket:5517"]),
    ("id", "ticket 5512", ["ticket:5512"]),
    ("id", "SKU-8072 stock", ["sku:8072"]),
    ("id", "SKU-7855", ["sku:7855"]),
    ("id", "gate for LH 4504", ["flight:4504"]),
    ("id", "LH 4608 departure time", ["flight:4608"]),
    ("id", "E1888", ["ticket:5524"]),
    ("id", "INV-21104", ["inv:21104"]),
    # -- meaning: a paraphrase with no content word in common ----------------------------
    ("meaning", "which nut must never be served to her at the team dinner?",
     ["person:priya:0"]),
    ("meaning", "who needs an aisle place on planes because he is tall?", ["person:marco:1"]),
    ("meaning", "someone who cannot digest dairy", ["person:ada:4"]),
    ("meaning", "who feels seasick on a ferry?", ["person:fatima:4"]),
    ("meaning", "a colleague who cannot tell red from green", ["person:lars:1"]),
    ("meaning", "who is scared of planes and travels by rail?", ["person:tomas:4"]),
    ("meaning", "who is hard of hearing on one side?", ["person:amara:1"]),
    ("meaning", "a teammate who is visually impaired", ["person:wei:3"]),
    ("meaning", "which relational database will payments move onto?", ["decision:0"]),
    ("meaning", "when do we stop serving the old API version?", ["decision:3"]),
    ("meaning", "who looks after beehives?", ["person:lars:4"]),
    ("meaning", "how long do we retain backup copies?", ["decision:14"]),
    ("meaning", "where is the bicycle parking?", ["note:7"]),
    ("meaning", "a rule about reviewing code that changes login security", ["decision:10"]),
    # -- mixed: a name or identifier plus a paraphrase ------------------------------------
    ("mixed", "what does Priya like to drink?", ["person:priya:1"]),
    ("mixed", "Marco's dietary restrictions", ["person:marco:2"]),
    ("mixed", "Kenji's home city and time zone", ["person:kenji:0"]),
    ("mixed", "Sofia seafood allergy", ["person:sofia:3"]),
    ("mixed", "Wei preferred name", ["person:wei:4"]),
    ("mixed", "Amara's favourite beverage", ["person:amara:3"]),
    ("mixed", "checkout E1185 problem after paying", ["ticket:5505"]),
    ("mixed", "the glass teapot product code", ["sku:7948", "sku:8258"]),
    ("mixed", "Globex invoice that is being disputed", ["inv:21034"]),
    ("mixed", "flight to Osaka boarding gate", ["flight:4465", "flight:4595"]),
    ("mixed", "Fatima and lunch during the fasting month", ["person:fatima:0"]),
    ("mixed", "Ada's marathon race", ["person:ada:1"]),
    ("mixed", "Tomas homebrewing hobby", ["person:tomas:2"]),
]


def check() -> None:
    """Every label names a memory, and there are 200 memories and 40 queries."""
    assert len(MEMORIES) == 200, len(MEMORIES)
    assert len(QUERIES) == 40, len(QUERIES)
    for _, query, relevant in QUERIES:
        missing = [k for k in relevant if k not in MEMORIES]
        assert not missing, (query, missing)
