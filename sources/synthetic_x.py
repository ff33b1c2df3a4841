"""X API v2 filtered-stream lines in many languages and scripts: the generator behind `tweet-producer sample`
and the synthetic source's `kind: tweets`.

One core (`tweet`) builds a line from whatever draws it is given: the sample drives it with one
`random.Random` stream (its bytes are fixed by data/sample_tweets.jsonl), the synthetic source with the
faster, chunk-reseeded `Draws` (sources/synthetic_base.py). `TweetKind` adds what a load generator needs:
an encoder that writes the same bytes as `encode_json` several times faster, from pre-encoded fragments.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

from sources.synthetic_base import Draws, Timestamps, chunked, encode_json, json_string

Rng = random.Random | Draws
# When the tweet was created, given the draws (the sample draws a millisecond jitter) and its index.
CreatedAt = Callable[[Rng, int], str]

# Snowflake-like ids: 19 digits, increasing with time, as X's are.
_FIRST_TWEET_ID = 1_861_000_000_000_000_000
_FIRST_USER_ID = 1_000_000_000
# Accounts in the sample (and the default population of the synthetic source).
DEFAULT_ACCOUNTS = 240

# (lang, phrases, hashtags) — phrases in the language's own script.
_LANGUAGES: list[tuple[str, list[str], list[str]]] = [
    (
        "en",
        [
            "Streaming data is finally easy",
            "Just shipped a new pipeline",
            "Who else is watching the launch tonight?",
            "Coffee first, then Kinesis shards",
            "This dashboard looks great",
        ],
        ["AWS", "DataEngineering", "Serverless"],
    ),
    (
        "es",
        ["¡Qué día tan increíble en la conferencia!", "Mañana empieza el maratón de datos", "Nuestra canción favorita otra vez"],
        ["Datos", "Fútbol", "Música"],
    ),
    (
        "fr",
        ["Très bonne journée à Paris", "On déploie ça ce soir, ça va être épique", "Le café est prêt, à vous !"],
        ["Été", "Développement", "Cinéma"],
    ),
    (
        "de",
        ["Schöne Grüße aus München", "Die Straße ist heute völlig überfüllt", "Endlich Wochenende – Zeit für Bücher"],
        ["Fußball", "Technik", "Grüße"],
    ),
    (
        "pt",
        ["Bom dia! Hoje tem lançamento novo", "Não acredito que já é dezembro", "Ação de graças com a família"],
        ["Tecnologia", "Futebol", "Ação"],
    ),
    (
        "ja",
        ["今日はとても良い天気ですね", "新しいデータパイプラインを公開しました", "週末はラーメンを食べに行こう"],
        ["東京", "技術", "ラーメン"],
    ),
    ("zh", ["今天的数据流处理终于跑通了", "大家周末愉快", "这家咖啡店真不错"], ["数据", "云计算", "咖啡"]),
    ("ko", ["오늘 발표 정말 멋졌어요", "주말에 한강 가실 분?", "새로운 기능이 출시되었습니다"], ["서울", "기술", "음악"]),
    ("ar", ["صباح الخير من القاهرة", "البيانات الضخمة تغير كل شيء", "مبروك للفريق على الفوز"], ["تقنية", "كرة_القدم", "القاهرة"]),
    ("he", ["בוקר טוב מתל אביב", "השקנו היום גרסה חדשה", "שבת שלום לכולם"], ["טכנולוגיה", "ישראל"]),
    ("hi", ["नमस्ते दोस्तों, आज का दिन शानदार है", "क्रिकेट मैच देखने का समय", "नई तकनीक सीखना मज़ेदार है"], ["क्रिकेट", "भारत", "तकनीक"]),
    (
        "ru",
        ["Доброе утро, Москва!", "Запустили новый сервис сегодня", "Кто смотрит матч вечером?"],
        ["Технологии", "Футбол", "Москва"],
    ),
    ("el", ["Καλημέρα από την Αθήνα", "Νέα έκδοση σήμερα"], ["Αθήνα", "Τεχνολογία"]),
    ("th", ["สวัสดีครับ วันนี้อากาศดีมาก", "ข้อมูลแบบเรียลไทม์สนุกมาก"], ["กรุงเทพ", "เทคโนโลยี"]),
    ("tr", ["Günaydın İstanbul!", "Bugün yeni sürümü yayınladık, çok heyecanlıyız"], ["İstanbul", "Teknoloji"]),
]
_EMOJI = ["🚀", "🔥", "😂", "❤️", "🎉", "👍🏽", "🙏", "🇯🇵", "👨‍👩‍👧‍👦", "☕", "📈", "🤖", "🌍", "✨"]
_FIRST_NAMES = [
    "Ana",
    "Kenji",
    "Fatima",
    "Olga",
    "Priya",
    "Lucas",
    "Mei",
    "Jonas",
    "Yara",
    "Noah",
    "Sofia",
    "Amir",
    "Hana",
    "Mateo",
    "Zeynep",
    "Ivan",
    "Aisha",
    "Leo",
    "Nia",
    "Ravi",
    "أحمد",
    "さくら",
    "Дмитрий",
    "李娜",
    "민준",
]
_RULES = [("1861000000000000001", "data streaming"), ("1861000000000000002", "languages"), ("1861000000000000003", "emoji")]


def accounts(rng: Rng, count: int = DEFAULT_ACCOUNTS) -> list[dict[str, str]]:
    """`count` authors (id, display name, handle); the handle embeds the index, so handles are unique."""
    users = []
    for index in range(count):
        first = rng.choice(_FIRST_NAMES)
        handle = f"{'user' if not first.isascii() else first.lower()}_{index:03d}{rng.randrange(100):02d}"
        users.append(
            {
                "id": str(_FIRST_USER_ID + index * 7919),
                "name": f"{first} {rng.choice(['✨', '', '', 'Dev'])}".strip(),
                "username": handle,
            }
        )
    return users


def tweet(rng: Rng, index: int, users: list[dict[str, str]], created_at: CreatedAt) -> dict[str, Any]:
    """Stream line `index`: a v2 tweet by one of `users` with its author in includes and a matching rule."""
    lang, phrases, tags = rng.choice(_LANGUAGES)
    user = rng.choice(users)
    text = rng.choice(phrases)
    hashtags = []
    for tag in rng.sample(tags, k=rng.randint(0, min(2, len(tags)))):
        text += " "
        hashtags.append({"start": len(text), "end": len(text) + 1 + len(tag), "tag": tag})
        text += f"#{tag}"
    if rng.random() < 0.6:
        text += " " + "".join(rng.choice(_EMOJI) for _ in range(rng.randint(1, 3)))
    created = created_at(rng, index)
    tweet_id = str(_FIRST_TWEET_ID + index * 4096 + rng.randrange(4096))
    data: dict[str, Any] = {
        "id": tweet_id,
        "text": text,
        "author_id": user["id"],
        "created_at": created,
        "lang": lang,
        "conversation_id": tweet_id,
        "public_metrics": {
            "retweet_count": rng.randrange(50),
            "reply_count": rng.randrange(10),
            "like_count": rng.randrange(500),
            "quote_count": rng.randrange(5),
        },
    }
    if hashtags:
        data["entities"] = {"hashtags": hashtags}
    rule_id, rule_tag = rng.choice(_RULES)
    return {"data": data, "includes": {"users": [user]}, "matching_rules": [{"id": rule_id, "tag": rule_tag}]}


class TweetKind:
    """Synthetic tweets: (event, bytes) for index = start, start + 1, ...; the same seed, the same lines."""

    def __init__(self, seed: int, population: int, timestamps: Timestamps) -> None:
        self.seed = seed
        self.users = accounts(random.Random(seed), population or DEFAULT_ACCOUNTS)
        self._timestamps = timestamps
        # includes.users and matching_rules never change per user / rule: encoded once.
        self._user_json = {u["id"]: encode_json(u) for u in self.users}
        self._rule_json = {rule_id: encode_json({"id": rule_id, "tag": tag}) for rule_id, tag in _RULES}

    def _created_at(self, _rng: Rng, index: int) -> str:
        stamps = self._timestamps
        return stamps.iso(stamps.epoch_ms(index))

    def _make(self, draws: Draws, index: int) -> dict[str, Any]:
        return tweet(draws, index, self.users, self._created_at)

    def events(self, start: int) -> Iterator[dict[str, Any]]:
        return chunked(self.seed, start, self._make)

    def encode(self, event: dict[str, Any]) -> bytes:
        """The same bytes as encode_json(event), from fragments (a tweet's shape is fixed by `tweet`)."""
        data = event["data"]
        metrics = data["public_metrics"]
        entities = ""
        if "entities" in data:
            tags = ",".join(
                f'{{"start":{t["start"]},"end":{t["end"]},"tag":{json_string(t["tag"])}}}' for t in data["entities"]["hashtags"]
            )
            entities = f',"entities":{{"hashtags":[{tags}]}}'
        return (
            f'{{"data":{{"id":"{data["id"]}","text":{json_string(data["text"])},"author_id":"{data["author_id"]}",'
            f'"created_at":"{data["created_at"]}","lang":"{data["lang"]}","conversation_id":"{data["conversation_id"]}",'
            f'"public_metrics":{{"retweet_count":{metrics["retweet_count"]},"reply_count":{metrics["reply_count"]},'
            f'"like_count":{metrics["like_count"]},"quote_count":{metrics["quote_count"]}}}{entities}}},'
            f'"includes":{{"users":[{self._user_json[data["author_id"]]}]}},'
            f'"matching_rules":[{self._rule_json[event["matching_rules"][0]["id"]]}]}}'
        ).encode()
