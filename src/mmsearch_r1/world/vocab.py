"""The fixed vocabularies of the demo world: attributes, their answer words and aliases, and the sentences
and question templates that speak about them.

Every attribute has a short phrase (``home city``) whose words appear, inside an entity's page, only in the
sentence that states that attribute: a text query "<entity name> <phrase>" then finds exactly that sentence.
Answers are single words; aliases are the case, plural and synonym variants a reader would also accept.
Home cities are not listed here: they are made-up names drawn per world (``names.city_names``).

Question templates do not name the entity: the model must recognise the emblem in the image or search for
it. Each attribute has two templates used for training and in-domain testing, and one held-out template
that only the held-out split uses.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AttributeSpec:
    """One attribute an entity may have, with everything needed to state it and ask about it.

    ``fact_sentence`` and the templates are ``str.format`` strings with fields ``value`` (the answer word)
    and, in name questions, ``name``.
    """

    name: str
    phrase: str
    values: tuple[tuple[str, ...], ...]  # each entry: (answer, *aliases)
    fact_sentence: str
    name_question: str
    train_templates: tuple[str, ...]
    heldout_templates: tuple[str, ...]


ATTRIBUTES: tuple[AttributeSpec, ...] = (
    AttributeSpec(
        name="home_city",
        phrase="home city",
        values=(),  # drawn per world from the name generator
        fact_sentence="Its home city is {value}.",
        name_question="What is the home city of {name}?",
        train_templates=(
            "What is the home city of the guild with this emblem?",
            "Which city is home to the guild shown in the image?",
        ),
        heldout_templates=("Name the city where the guild behind this emblem is based.",),
    ),
    AttributeSpec(
        name="flag_colour",
        phrase="flag colour",
        values=(
            ("red", "crimson", "scarlet"), ("blue", "azure"), ("green", "emerald"), ("yellow", "golden"),
            ("purple", "violet"), ("orange", "amber"), ("black", "ebony"), ("white", "ivory"),
            ("grey", "gray"), ("pink", "rose"),
        ),
        fact_sentence="Its flag colour is {value}.",
        name_question="What is the flag colour of {name}?",
        train_templates=(
            "What is the flag colour of the guild with this emblem?",
            "Which colour is the flag of the guild shown in the image?",
        ),
        heldout_templates=("The guild behind this emblem flies a flag of which colour?",),
    ),
    AttributeSpec(
        name="founding_decade",
        phrase="founding decade",
        values=(
            ("twenties", "1920s", "20s"), ("thirties", "1930s", "30s"), ("forties", "1940s", "40s"),
            ("fifties", "1950s", "50s"), ("sixties", "1960s", "60s"), ("seventies", "1970s", "70s"),
            ("eighties", "1980s", "80s"), ("nineties", "1990s", "90s"),
        ),
        fact_sentence="Its founding decade is the {value}.",
        name_question="What is the founding decade of {name}?",
        train_templates=(
            "What is the founding decade of the guild with this emblem?",
            "In which decade was the guild shown in the image founded?",
        ),
        heldout_templates=("The guild behind this emblem dates from which decade?",),
    ),
    AttributeSpec(
        name="favourite_food",
        phrase="favourite food",
        values=(
            ("apple", "apples"), ("bread", "loaf"), ("cheese", "cheeses"), ("rice",), ("fish", "fishes"),
            ("honey",), ("soup", "broth"), ("plum", "plums"), ("bean", "beans"), ("melon", "melons"),
        ),
        fact_sentence="Its favourite food is {value}.",
        name_question="What is the favourite food of {name}?",
        train_templates=(
            "What is the favourite food of the guild with this emblem?",
            "Which food does the guild shown in the image like best?",
        ),
        heldout_templates=("Members of the guild behind this emblem love eating what?",),
    ),
    AttributeSpec(
        name="mascot_animal",
        phrase="mascot animal",
        values=(
            ("fox", "foxes"), ("owl", "owls"), ("bear", "bears"), ("wolf", "wolves"), ("deer",),
            ("hawk", "hawks"), ("crab", "crabs"), ("frog", "frogs"), ("goat", "goats"), ("swan", "swans"),
        ),
        fact_sentence="Its mascot animal is the {value}.",
        name_question="What is the mascot animal of {name}?",
        train_templates=(
            "What is the mascot animal of the guild with this emblem?",
            "Which animal is the mascot of the guild shown in the image?",
        ),
        heldout_templates=("The guild behind this emblem keeps which animal as its mascot?",),
    ),
    AttributeSpec(
        name="main_export",
        phrase="main export",
        values=(
            ("salt",), ("wool",), ("copper",), ("silk",), ("timber", "lumber", "wood"), ("glass",),
            ("tea",), ("iron",), ("clay",), ("wax",),
        ),
        fact_sentence="Its main export is {value}.",
        name_question="What is the main export of {name}?",
        train_templates=(
            "What is the main export of the guild with this emblem?",
            "Which good does the guild shown in the image export most?",
        ),
        heldout_templates=("The guild behind this emblem is best known for selling what?",),
    ),
    AttributeSpec(
        name="signature_instrument",
        phrase="signature instrument",
        values=(
            ("drum", "drums"), ("flute", "flutes"), ("harp", "harps"), ("horn", "horns"), ("lute", "lutes"),
            ("bell", "bells"), ("fiddle", "violin"), ("pipe", "pipes"),
        ),
        fact_sentence="Its signature instrument is the {value}.",
        name_question="What is the signature instrument of {name}?",
        train_templates=(
            "What is the signature instrument of the guild with this emblem?",
            "Which instrument is played by the guild shown in the image?",
        ),
        heldout_templates=("The guild behind this emblem is famous for playing which instrument?",),
    ),
)

ATTRIBUTE_BY_NAME = {spec.name: spec for spec in ATTRIBUTES}

# Page sentences that state nothing: they hold neither an entity name nor any attribute phrase word, so a
# query "<name> <phrase>" never picks them for a summary.
FILLER_SENTENCES: tuple[str, ...] = (
    "The guild was formed by travelling craftsmen.",
    "Members meet twice a year to settle their accounts.",
    "Apprentices serve seven years before they may vote.",
    "The guild hall has a slate roof and a narrow tower.",
    "Its ledgers are written in a careful old script.",
    "Visitors are welcome on the last day of each month.",
    "A council of elders decides every dispute.",
    "The members wear long coats with wide sleeves.",
    "New members swear an oath at the river bank.",
    "Its archive holds maps of the old trade roads.",
    "The guild keeps a small library of its own.",
    "Its members are known for their patience.",
    "Storms once damaged the guild hall badly.",
    "The guild pays for a school in the lower town.",
    "Its seal is pressed onto every letter it sends.",
    "Members greet each other with a short bow.",
)

# Closing sentences name the entity; they come after every fact on a page, so a summary that takes them
# still opens with the fact the query asked for.
NAME_SENTENCES: tuple[str, ...] = (
    "{name} welcomes travellers every spring.",
    "Many stories are told about {name}.",
    "{name} keeps its records in a stone hall.",
    "Letters to {name} are answered within a week.",
    "{name} has kept the same rules for a long time.",
    "Traders often speak well of {name}.",
)

# Guide pages: they share the attribute words with every entity page but name no entity, so a text query
# that leaves the entity's name out lands on them.
GUIDE_SENTENCES: tuple[str, ...] = (
    "Every guild records its {phrase} in the great register.",
    "Scholars compare the {phrase} of many guilds.",
    "A guild rarely changes its {phrase}.",
    "The {phrase} of a guild tells travellers much about it.",
)

# Chronicle pages open like this, restate some of the entity's facts among fillers, and end with a name sentence.
CHRONICLE_INTRO = "This chronicle follows the guild through the years."
