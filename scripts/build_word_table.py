"""Build capindex/data/word_table.json from WordNet 3.0: the broader words a search may use.

Development-time only: nothing in capindex reads WordNet at run time. It needs NLTK
(`pip install nltk`, not a capindex dependency) and the WordNet 3.0 database
(Debian: `apt-get install wordnet-base`, files under /usr/share/wordnet).

    python scripts/build_word_table.py [--wordnet /usr/share/wordnet] [--check-coco FILE]

Inputs, each mapped to ONE WordNet noun synset:
  imagenet  the classifier's 1,000 labels (capindex/model/imagenet_labels.txt) with the
            class wnids in the same order (scripts/data/imagenet_wnids.txt, source noted there);
            an ImageNet class IS a WordNet synset, its wnid is "n" + the synset's offset.
  coco      the detector's 80 classes, each mapped by hand below (COCO_SYNSETS).
  words     caption words: the nouns of the shipped captioner's vocabulary plus QUERY_NOUNS,
            each taken in its most frequent sense (first synset) unless WORD_SENSES says
            otherwise (senses a photo caption means: "table" is furniture, not a data table).

For each synset the expansion is: the synset's own everyday synonyms, then the words of
its hypernyms (and instance hypernyms), nearest first. The walk stops at the abstract
top levels (STOP: not emitted, not climbed past), passes through taxonomic jargon
without emitting it (SKIP) and leaves out a few misleading links (CUT: a car is not a
"container"). Only words people type are kept: lower-case single-word lemmas, not in
NEVER; of a synset, its first lemma plus any other that SemCor (WordNet's `cntlist`
counts) tags at least a quarter as often, so "animal" keeps neither "creature" nor
"fauna". SUPPLEMENT adds a few words WordNet does not give as hypernyms ("pet" for a
domestic cat or dog, "child"/"kid" for boy and girl, "vehicle" for bus and train).
At most MAX_WORDS words per term, nearest first; supplement words are always kept.

Caption words: a vocabulary word counts as a noun when SemCor tags it mostly as one
(used_as_noun: "black", "walks" are not); plurals become their singular ("arms" -> arm);
its sense is the first that a photo can show (photo_sense: a physical thing, a sport, a
social event; no proper nouns), or the one WORD_SENSES names after reading the table
(None there drops the word: colours, and verbs like "petting" whose noun sense misleads).

Output: {"version", "source", "imagenet": {label: [words]}, "coco": {...}, "words": {...},
"plurals": {irregular plural: singular}}; keys sorted, one entry per line, deterministic.
ImageNet keys are the labels exactly as in imagenet_labels.txt ("Cardigan" the corgi and
"cardigan" the sweater differ only by case); COCO and caption keys are lower case.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's capindex, for the vocabulary and plural rules

from capindex.words import simple_singulars  # noqa: E402  (the rules the table is read with)

LABELS = ROOT / "capindex" / "model" / "imagenet_labels.txt"
WNIDS = ROOT / "scripts" / "data" / "imagenet_wnids.txt"
CHECKPOINT = ROOT / "capindex" / "weights" / "default.pt"
OUT = ROOT / "capindex" / "data" / "word_table.json"

VERSION = 1
MAX_WORDS = 8
VERB_RATIO = 3.5  # a caption word is a noun if its verb use is tagged at most this many times more

# WordNet's lexicographer file names (lexnames(5WN)); Debian's wordnet-base lacks the
# `lexnames` file NLTK's reader needs, so it is written from this list.
LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute "
    "noun.body noun.cognition noun.communication noun.event noun.feeling noun.food "
    "noun.group noun.location noun.motive noun.object noun.person noun.phenomenon "
    "noun.plant noun.possession noun.process noun.quantity noun.relation noun.shape "
    "noun.state noun.substance noun.time verb.body verb.change verb.cognition "
    "verb.communication verb.competition verb.consumption verb.contact verb.creation "
    "verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative "
    "verb.weather adj.ppl"
).split()
_POS_NUMBER = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}

# Abstract levels: neither emitted nor climbed past.
STOP = frozenset("""
entity.n.01 physical_entity.n.01 abstraction.n.06 thing.n.12 object.n.01 whole.n.02
living_thing.n.01 organism.n.01 being.n.01 causal_agent.n.01 matter.n.03 substance.n.01
substance.n.07 material.n.01 artifact.n.01 instrumentality.n.03 psychological_feature.n.01
attribute.n.02 relation.n.01 measure.n.02 group.n.01 discipline.n.01 set.n.05 communication.n.02
event.n.01 act.n.02 state.n.02 location.n.01 region.n.01 part.n.01 part.n.02 unit.n.05
commodity.n.01 consumer_goods.n.01 durables.n.01 structure.n.01 creation.n.02
product.n.02 solid.n.01 fluid.n.01 component.n.03
geological_formation.n.01 natural_object.n.01 covering.n.02
system.n.01 way.n.06
""".split())

# Jargon on the way up: not emitted, climbed through ("golden retriever" reaches
# "animal" through "placental", "vertebrate", "chordate", which nobody searches for).
SKIP = frozenset("""
chordate.n.01 vertebrate.n.01 placental.n.01 mammal.n.01 carnivore.n.01 canine.n.02
ungulate.n.01 even-toed_ungulate.n.01 odd-toed_ungulate.n.01 ruminant.n.01 bovid.n.01
invertebrate.n.01 arthropod.n.01 primate.n.02 rodent.n.01 aquatic_vertebrate.n.01
bony_fish.n.01 teleost_fish.n.01 spiny-finned_fish.n.01 diapsid.n.01 anapsid.n.01
amphibian.n.03 passerine.n.01 oscine.n.01 gallinaceous_bird.n.01 wading_bird.n.01
mollusk.n.01 gastropod.n.01 crustacean.n.01 decapod_crustacean.n.01 arachnid.n.01
lagomorph.n.01 viverrine.n.01 procyonid.n.01 musteline_mammal.n.01 marsupial.n.01
metatherian.n.01 monotreme.n.01 prototherian.n.01 vascular_plant.n.01 angiosperm.n.01
spermatophyte.n.01 herb.n.01 reproductive_structure.n.01 plant_organ.n.01 plant_part.n.01
natural_object.n.01 binary_compound.n.01 compound.n.02 chemical.n.01 liquid.n.01
liquid.n.03 nutriment.n.01 edible_fruit.n.01 produce.n.01 foodstuff.n.02
""".split())

# Hypernym links not followed: WordNet files wheeled vehicles and spoons under "container".
CUT = frozenset({
    ("wheeled_vehicle.n.01", "container.n.01"),
    ("spoon.n.01", "container.n.01"),
})

# Lemmas never emitted: too vague, too technical or too odd to help a search.
NEVER = frozenset("""
beast brute creature fauna someone somebody individual mortal soul article ware
conveyance transport craft sheet circle plate bar lever grip case set receiver
protection shelter passage conduit mechanism signaling nutrient furnishing peripheral
runner tubing piece part region area process extremity phenomenon point tract surface
line establishment obstruction agent outlet form shape material work top side level
spot place medium energy state space representation diversion recreation activity
cover support restraint lodging genitor progenitor antecedent communicator preserver
associate peer equal affair occasion biome transducer starches flavorer paraphernalia
reflector globule excavation depression blind framework tissue section segment
saurian chelonian coelenterate leporid phasianid proboscidean elasmobranch echinoderm
iguanid elapid agamid basidiomycete edentate ambystomid anthozoan odonate ganoid
cyprinid cetacean nymphalid pierid salmonid cephalopod neuropteron scorpaenid
scorpaenoid phalanger danaid ratite plectognath acarine ceratopsian ornithischian
archosaur phasmid larid crucifer chordophone reproducer strengthener duplicator
winder turner applicator entanglement contraption contrivance woodenware drygoods
capitalist businessperson unfortunate principal wrongdoer offender perceiver
concoction fare feature element mixture compound unit whole member attachment bond
connection opening orifice passageway structure boundary bounds limit stalk
pome drupe friedcake radiotelephone rima chemoreceptor articulator cuss
occupation business job combustion oxidation reaction action help particulate hand
community matter agaric regulator collection
""".split())

# Words WordNet does not give as hypernyms, added to every term under these synsets.
SUPPLEMENT = {
    "domestic_animal.n.01": ("pet",),      # domestic cat, dog (WordNet's pet.n.01 has no hyponyms)
    "hamster.n.01": ("pet",),
    "guinea_pig.n.02": ("pet",),
    "rabbit.n.01": ("pet",),
    "kitten.n.01": ("cat", "pet"),
    "goldfish.n.01": ("pet", "fish"),
    "parrot.n.01": ("pet",),
    "male_child.n.01": ("child", "kid"),   # WordNet: boy -> male person, not child
    "female_child.n.01": ("child", "kid"),
    "public_transport.n.01": ("vehicle",),  # bus, train: WordNet puts them under "conveyance"
    "person.n.01": ("people",),
    "people.n.01": ("person",),
}

# ImageNet classes whose synset is not what their photos show: class "cup" is
# cup.n.06, "a punch served in a pitcher", and "television" and "radio" are the
# broadcasting systems; their photos show a cup, a television set and a radio set.
IMAGENET_SENSES = {
    "cup": "cup.n.01", "television": "television_receiver.n.01", "radio": "radio_receiver.n.01",
}

# COCO's 80 detector classes (YOLOX order) -> synset, chosen by hand.
COCO_SYNSETS = {
    "person": "person.n.01", "bicycle": "bicycle.n.01", "car": "car.n.01",
    "motorcycle": "motorcycle.n.01", "airplane": "airplane.n.01", "bus": "bus.n.01",
    "train": "train.n.01", "truck": "truck.n.01", "boat": "boat.n.01",
    "traffic light": "traffic_light.n.01", "fire hydrant": "fireplug.n.01",
    "stop sign": "street_sign.n.01", "parking meter": "parking_meter.n.01",
    "bench": "bench.n.01", "bird": "bird.n.01", "cat": "domestic_cat.n.01", "dog": "dog.n.01",
    "horse": "horse.n.01", "sheep": "sheep.n.01", "cow": "cow.n.01",
    "elephant": "elephant.n.01", "bear": "bear.n.01", "zebra": "zebra.n.01",
    "giraffe": "giraffe.n.01", "backpack": "backpack.n.01", "umbrella": "umbrella.n.01",
    "handbag": "bag.n.04", "tie": "necktie.n.01", "suitcase": "bag.n.06",
    "frisbee": "frisbee.n.01", "skis": "ski.n.01", "snowboard": "snowboard.n.01",
    "sports ball": "ball.n.01", "kite": "kite.n.03", "baseball bat": "baseball_bat.n.01",
    "baseball glove": "baseball_glove.n.01", "skateboard": "skateboard.n.01",
    "surfboard": "surfboard.n.01", "tennis racket": "tennis_racket.n.01",
    "bottle": "bottle.n.01", "wine glass": "wineglass.n.01", "cup": "cup.n.01",
    "fork": "fork.n.01", "knife": "knife.n.01", "spoon": "spoon.n.01", "bowl": "bowl.n.03",
    "banana": "banana.n.02", "apple": "apple.n.01", "sandwich": "sandwich.n.01",
    "orange": "orange.n.01", "broccoli": "broccoli.n.02", "carrot": "carrot.n.03",
    "hot dog": "hotdog.n.02", "pizza": "pizza.n.01", "donut": "doughnut.n.02",
    "cake": "cake.n.03", "chair": "chair.n.01", "couch": "sofa.n.01",
    "potted plant": "pot_plant.n.01", "bed": "bed.n.01", "dining table": "dining_table.n.01",
    "toilet": "toilet.n.02", "tv": "television_receiver.n.01", "laptop": "laptop.n.01",
    "mouse": "mouse.n.04", "remote": "remote_control.n.01", "keyboard": "computer_keyboard.n.01",
    "cell phone": "cellular_telephone.n.01", "microwave": "microwave.n.02", "oven": "oven.n.01",
    "toaster": "toaster.n.02", "sink": "sink.n.01", "refrigerator": "refrigerator.n.01",
    "book": "book.n.02", "clock": "clock.n.01", "vase": "vase.n.01", "scissors": "scissors.n.01",
    "teddy bear": "teddy.n.01", "hair drier": "hand_blower.n.01", "toothbrush": "toothbrush.n.01",
}

# A caption word is taken in its first sense under one of these (see photo_sense).
PHOTO_ROOTS = frozenset({"physical_entity.n.01", "sport.n.01", "social_event.n.01"})

# Caption words whose photo sense (see photo_sense) is not the one a caption means,
# found by reading the table: the sense to use instead, or None for no expansion.
WORD_SENSES = {
    "table": "table.n.02", "kite": "kite.n.03", "cat": "domestic_cat.n.01",
    "tiger": "tiger.n.02", "peach": "peach.n.03", "mug": "mug.n.04", "cake": "cake.n.03",
    "fireman": "fireman.n.04", "climber": "climber.n.04", "chess": "chess.n.02",
    "cricket": "cricket.n.02", "plate": "plate.n.04", "shepherd": "sheepherder.n.01",
    "runner": "runner.n.02", "weed": "weed.n.01", "bunny": "bunny.n.02",
    "post": "post.n.04", "soda": "pop.n.02", "pirate": "pirate.n.02",
    "pacifier": "comforter.n.04", "sidecar": "sidecar.n.02", "poster": "poster.n.01",
    "wire": "wire.n.02", "model": "model.n.03", "female": "female.n.02", "male": "male.n.02",
    "microwave": "microwave.n.02", "television": "television_receiver.n.01",
    "snowball": "snowball.n.04", "hoop": "hoop.n.02", "match": "match.n.02",
    "egg": "egg.n.02", "sparkler": "sparkler.n.02", "cape": "cape.n.02",
    "pumpkin": "pumpkin.n.02", "banana": "banana.n.02", "broccoli": "broccoli.n.02",
    "cheerleader": "cheerleader.n.02", "people": "people.n.01", "woods": "forest.n.01",
    "girl": "female_child.n.01", "bat": "bat.n.05", "net": "net.n.04", "swing": "swing.n.02",
    "slide": "slide.n.04", "monitor": "monitor.n.04", "whistle": "whistle.n.03",
    "seal": "seal.n.09", "cushion": "cushion.n.03", "seat": "seat.n.03",
    "helmet": "helmet.n.02", "balloon": "balloon.n.02", "scooter": "scooter.n.02",
    "tram": "streetcar.n.01", "bike": "bicycle.n.01",
    "batman": None,
    # colours, and words a caption rarely means as the thing WordNet ranks first
    "orange": None, "teal": None, "cream": None, "gold": None, "silver": None,
    "pink": None, "tan": None, "turquoise": None, "neon": None, "coach": None,
    "hood": None, "hind": None, "mound": None, "scale": None, "giant": None,
    "monster": None, "devil": None, "dragon": None, "pain": None, "trick": None,
    "wave": None, "current": None, "pile": None, "nap": None, "coaster": None,
    "stunt": None, "safety": None, "figure": None, "act": None, "number": None,
    "name": None, "type": None, "sort": None, "life": None, "moment": None,
    "right": None, "view": None, "size": None, "spray": None, "speed": None, "dot": None,
    "sideline": None, "vintage": None, "signal": None, "round": None, "line": None,
    "light": None, "fairy": None, "superman": None, "prey": None, "target": None,
    "jack": None, "controller": None, "group": None, "middle": None, "midst": None,
    "mess": None, "story": None, "series": None, "skeleton": None, "circuit": None,
    "cutout": None, "dive": None, "domino": None, "easter": None, "exercise": None,
    "facial": None, "tee": None, "heel": None, "rest": None, "security": None,
    "sheet": None, "shadow": None, "rubber": None, "row": None, "wheeler": None,
    # verbs in captions ("a dog dribbles", "kids splash") whose rare noun sense WordNet has
    "attack": None, "approach": None, "barren": None, "cast": None, "chase": None,
    "check": None, "dribble": None, "drinking": None, "diving": None, "flaming": None,
    "flip": None, "kiss": None, "love": None, "march": None, "pitch": None, "print": None,
    "rally": None, "return": None, "romp": None, "share": None, "shot": None, "sling": None,
    "splash": None, "split": None, "squirt": None, "tag": None, "test": None, "uphill": None,
    "incline": None, "feed": None, "knit": None, "sparring": None, "petting": None,
    "pump": None, "landing": None, "link": None, "washing": None, "tackle": None,
    "paddle": None,
}

# Nouns used in the plural that keep their own entry (not the singular's).
PLURAL_NOUNS = frozenset("""
glasses sunglasses goggles binoculars scissors shorts trunks tights jeans pants
overalls pajamas clothes stairs woods bleachers headphones people
""".split())

# Nouns people search for that the shipped captioner's vocabulary may lack.
QUERY_NOUNS = """
animal pet kid child baby toddler teenager puppy kitten people family crowd friend
dog cat bird horse cow sheep fish duck goose chicken pig goat rabbit hamster parrot
car truck bus bicycle bike motorcycle motorbike boat ship yacht airplane plane aircraft
train tram taxi tractor scooter skateboard surfboard snowboard ski helmet
beach sea ocean lake river waterfall mountain hill forest jungle desert island park
garden field meadow city town village street road bridge building house church castle
tower skyscraper sunset sunrise sky cloud rain snow fog storm rainbow moon star
flower rose tulip daisy sunflower tree palm grass leaf mushroom
food meal breakfast lunch dinner pizza burger hamburger sandwich salad soup pasta
cake cookie bread cheese fruit apple banana orange strawberry grape vegetable
coffee espresso cappuccino tea wine beer juice milk cocktail
phone smartphone laptop computer television camera guitar piano violin drum
book toy doll ball balloon kite umbrella bag backpack hat glasses sunglasses
wedding bride groom party birthday concert festival parade game match
soccer football basketball baseball tennis golf hockey volleyball
bear sink slide swing monitor whistle net husky rowing bat seat
""".split()

# Function words and others never treated as caption nouns ("a" is vitamin A in WordNet).
NOT_NOUNS = frozenset("""
a an the and or but nor of in on at to from by with without into onto over under up down
out off about above below across along around behind beside besides between beyond
through during after before near inside outside upon against among amongst amidst toward
towards while as is are was were be been being am has have had do does did it its he she
they them their his her him we us our you your i me my this that these those there here
who whom whose which what where when why how all any each every some no not one two three
four five six seven eight nine ten many much more most other another such only own same
so than too very can will just should now also still very lot lots back front top bottom
side way something someone somebody anything nothing thing things
""".split())


def open_wordnet(wordnet_dir: Path, work: Path):
    """NLTK's reader over a copy of the WordNet 3.0 database plus a written `lexnames`."""
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class Reader(WordNetCorpusReader):
        def map_wn(self, version="wordnet"):  # the database IS 3.0: no sense mapping to load
            return None

    for name in ("data", "index"):
        for pos in ("noun", "verb", "adj", "adv"):
            shutil.copy(wordnet_dir / f"{name}.{pos}", work / f"{name}.{pos}")
    for extra in ("noun.exc", "verb.exc", "adj.exc", "adv.exc", "cntlist.rev"):
        shutil.copy(wordnet_dir / extra, work / extra)
    (work / "lexnames").write_text("".join(
        f"{i:02d}\t{name}\t{_POS_NUMBER[name.split('.')[0]]}\n" for i, name in enumerate(LEXNAMES)))
    nltk.data.path.append(str(work))  # NLTK refuses corpus roots outside its data path
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "multilingual functions are not available"
        wn = Reader(str(work), None)
    if wn.get_version() != "3.0":
        raise SystemExit(f"{wordnet_dir}: WordNet {wn.get_version()}, need 3.0")
    named = [*STOP, *SKIP, *SUPPLEMENT, *COCO_SYNSETS.values(), *IMAGENET_SENSES.values(),
             *filter(None, WORD_SENSES.values()), *(n for pair in CUT for n in pair)]
    for name in named:  # a misspelt or non-canonical name fails here, not silently
        if wn.synset(name).name() != name:
            raise SystemExit(f"{name} is {wn.synset(name).name()}: use the canonical name")
    return wn


def typed_words(wn, synset) -> list[str]:
    """The words of `synset` people type: lower-case single words, not plural forms, not
    in NEVER; its first lemma, and another only if SemCor tags it at least a quarter as
    often as the first ("animal" keeps neither "creature" nor "beast")."""
    lemmas = synset.lemmas()
    first = lemmas[0].count()
    out = []
    for i, lemma in enumerate(lemmas):
        name = lemma.name()
        if not name.isalpha() or name != name.lower() or name in NEVER:
            continue
        if wn.morphy(name, "n") not in (None, name) or plural_of_other(name, synset):
            continue  # "cows", "oxen", "eggs"
        if i == 0 or (lemma.count() > 0 and 4 * lemma.count() >= first):
            out.append(name)
    return out


def plural_of_other(name: str, synset) -> bool:
    """Whether lemma `name` is the plural of another lemma of `synset` ("eggs", "egg")."""
    return any(form in synset.lemma_names() for form in simple_singulars(name))


def expand(wn, synset, term: str) -> list[str]:
    """Synonyms then hypernym words of `synset`, nearest first, at most MAX_WORDS; never
    `term` itself (a label's own words may come back: "Egyptian cat" -> cat)."""
    order = [synset]  # breadth-first: each synset once, at its shortest distance
    seen = {synset}
    frontier = [synset]
    while frontier:
        nxt = []
        for s in frontier:
            if s.name() in STOP:
                continue
            for h in sorted(s.hypernyms() + s.instance_hypernyms(), key=lambda x: x.name()):
                if (s.name(), h.name()) in CUT or h in seen:
                    continue
                seen.add(h)
                order.append(h)
                nxt.append(h)
        frontier = nxt
    words: list[str] = []
    extra: list[str] = []
    for s in order:
        extra.extend(SUPPLEMENT.get(s.name(), ()))
        if s.name() in STOP or s.name() in SKIP:
            continue
        words.extend(typed_words(wn, s))
    words = _unique(w for w in words if w != term)
    extra = _unique(w for w in extra if w != term)
    words = [w for w in words if w not in extra][: max(0, MAX_WORDS - len(extra))]
    return words + extra


def _unique(words) -> list[str]:
    seen: set[str] = set()
    return [w for w in words if not (w in seen or seen.add(w))]


def imagenet_entries(wn) -> dict[str, list[str]]:
    """ImageNet label -> words, its synset found from the wnid in the same position."""
    labels = LABELS.read_text(encoding="utf-8").splitlines()
    wnids = [ln.strip() for ln in WNIDS.read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    if len(labels) != 1000 or len(wnids) != 1000:
        raise SystemExit(f"need 1000 labels and wnids, got {len(labels)} and {len(wnids)}")
    entries = {}
    unmatched = []
    for label, wnid in zip(labels, wnids):
        synset = wn.synset_from_pos_and_offset("n", int(wnid[1:]))
        if label in IMAGENET_SENSES:
            synset = wn.synset(IMAGENET_SENSES[label])
        names = {ln.lower().replace("_", " ") for ln in synset.lemma_names()}
        if label.lower() not in names:
            unmatched.append(f"{label!r} -> {synset.name()} {sorted(names)[:3]}")
        entries[label] = expand(wn, synset, label.lower())
    print(f"imagenet: {len(entries)} labels; {len(unmatched)} not a lemma of their synset "
          "(torchvision renamed them; check the pairing):", file=sys.stderr)
    for line in unmatched:
        print("   ", line, file=sys.stderr)
    return entries


def coco_entries(wn, check_file: Path | None) -> dict[str, list[str]]:
    """COCO class -> words, through the hand-chosen COCO_SYNSETS."""
    if check_file is not None:
        names = [ln.strip() for ln in check_file.read_text().splitlines() if ln.strip()]
        if names != list(COCO_SYNSETS):
            raise SystemExit(f"{check_file}: classes differ from COCO_SYNSETS")
    return {name: expand(wn, wn.synset(sense), name) for name, sense in COCO_SYNSETS.items()}


def noun_lemma(wn, word: str) -> str | None:
    """The noun `word` names, singular when it is a plural: of WordNet's base forms, the
    one SemCor tags most often ("arms" -> "arm", "men" -> "man", but "dive" stays, not
    the plural of "diva", and "woods" stays); PLURAL_NOUNS keep their own entry."""
    forms = wn._morphy(word, "n")
    if not forms:
        return None
    if word in PLURAL_NOUNS and word in forms:
        return word

    def tagged(form: str) -> int:
        return sum(lm.count() for s in wn.synsets(form, "n") for lm in s.lemmas()
                   if lm.name().lower() == form)

    return max(forms, key=lambda f: (tagged(f), f == word))


def used_as_noun(wn, word: str, lemma: str) -> bool:
    """Whether a caption's `word` is likely a noun, by SemCor's tag counts: not mostly an
    adjective or adverb ("black", "young", "well"), and not mostly a verb ("walks",
    "stands"; a noun may be tagged less than its verb: "building" 52 to 139)."""
    if word in NOT_NOUNS or not word.isalpha() or len(word) < 2:
        return False

    def tagged(base: str | None, pos: str) -> int:
        if base is None:
            return 0
        return sum(lm.count() for s in wn.synsets(base, pos) for lm in s.lemmas()
                   if lm.name().lower() == base)

    noun = tagged(lemma, "n")
    verb = tagged(wn.morphy(word, "v"), "v")
    other = max(tagged(wn.morphy(word, pos), pos) for pos in ("a", "r"))
    return other <= noun and verb <= VERB_RATIO * noun + 2


def caption_words() -> list[str]:
    from capindex.model.checkpoint import load_checkpoint

    return list(load_checkpoint(CHECKPOINT)[1].words)


def photo_sense(wn, lemma: str):
    """The sense a caption means: WORD_SENSES, else the most frequent (first) sense that a
    photo can show: a physical thing, or a sport or social event (so "van" is a truck, not
    the avant-garde, and "yard" an enclosure, not a unit of length). Proper nouns are
    passed over ("burger" is also Warren Burger)."""
    if lemma in WORD_SENSES:
        return wn.synset(WORD_SENSES[lemma]) if WORD_SENSES[lemma] else None
    for synset in wn.synsets(lemma, "n"):
        if lemma not in synset.lemma_names():
            continue
        ancestors = {a.name() for path in synset.hypernym_paths() for a in path}
        if ancestors & PHOTO_ROOTS:
            return synset
    return None


def word_entries(wn, vocabulary: list[str]) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Caption nouns (singular) -> words, and the irregular plurals the regular rules of
    capindex.words.simple_singulars miss ("men" -> "man")."""
    entries: dict[str, list[str]] = {}
    plurals: dict[str, str] = {}
    for word in sorted(set(vocabulary) | set(QUERY_NOUNS)):
        lemma = noun_lemma(wn, word)
        if lemma is None or (word not in QUERY_NOUNS and not used_as_noun(wn, word, lemma)):
            continue
        if lemma != word and lemma not in simple_singulars(word):
            plurals[word] = lemma
        if lemma in entries:
            continue
        synset = photo_sense(wn, lemma)
        if synset is None:
            continue
        words = expand(wn, synset, lemma)
        if words:
            entries[lemma] = words
    plurals = {k: v for k, v in plurals.items() if v in entries}
    return entries, plurals


def write_table(table: dict, path: Path) -> None:
    """One entry per line, keys sorted: small, deterministic, readable diffs."""
    lines = ["{"]
    scalars = [k for k in sorted(table) if not isinstance(table[k], dict)]
    sections = [k for k in sorted(table) if isinstance(table[k], dict)]
    for k in scalars:
        lines.append(f"{json.dumps(k)}:{json.dumps(table[k])},")
    for n, k in enumerate(sections):
        lines.append(f"{json.dumps(k)}:{{")
        items = sorted(table[k].items())
        for i, (key, value) in enumerate(items):
            sep = "," if i < len(items) - 1 else ""
            lines.append(f"{json.dumps(key, ensure_ascii=False)}:"
                         f"{json.dumps(value, ensure_ascii=False, separators=(',', ':'))}{sep}")
        lines.append("}," if n < len(sections) - 1 else "}")
    lines.append("}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wordnet", type=Path, default=Path("/usr/share/wordnet"))
    parser.add_argument("--check-coco", type=Path, default=None,
                        help="a coco_classes.txt to compare with COCO_SYNSETS")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        wn = open_wordnet(args.wordnet, Path(tmp))
        words, plurals = word_entries(wn, caption_words())
        table = {
            "version": VERSION,
            "source": "WordNet 3.0 (Princeton University); see WORDNET-LICENSE",
            "imagenet": imagenet_entries(wn),
            "coco": coco_entries(wn, args.check_coco),
            "words": words,
            "plurals": plurals,
        }
    write_table(table, args.out)
    print(f"{args.out}: {args.out.stat().st_size} bytes; imagenet {len(table['imagenet'])}, "
          f"coco {len(table['coco'])}, words {len(words)}, plurals {len(plurals)}", file=sys.stderr)


if __name__ == "__main__":
    main()
