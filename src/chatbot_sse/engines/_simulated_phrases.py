"""The simulated bot's canned text: stories, jokes and fallback templates.

Kept apart from the rules so the rules read as logic. Templates use
`str.format` fields: `{name}` (", Ada" or ""), `{topics}` (quoted topic words)
and `{main}` (the most salient topic word, also as `{quoted}`); stories take `{intro}`, `{hero}`
and `{thing}`.
"""

from __future__ import annotations

__all__ = [
    "FEELING_HIGH",
    "FEELING_LOW",
    "GOODBYES",
    "HELP",
    "HIGH_MOODS",
    "HOW_ARE_YOU",
    "IDENTITY",
    "JOKES",
    "LOW_MOODS",
    "QUESTION_TEMPLATES",
    "STATEMENT_TEMPLATES",
    "STOPWORDS",
    "STORIES",
    "THANKS",
    "VAGUE_QUESTION",
    "VAGUE_STATEMENT",
]

HELP = (
    "I'm a small rule-based assistant, but I do listen. Tell me your name, where you live or "
    'what you like and I\'ll remember it. Ask me to do arithmetic ("what is 12 * 7?"), '
    "what you said earlier, or for a story or a joke. For testing the server, "
    '"/simulate error" fails mid-reply and "/simulate slow" streams slowly.'
)

IDENTITY = (
    "I'm the simulated engine of chatbot-sse: a deterministic, rule-based bot that streams its "
    "replies word by word, the way a language model would. I remember what you tell me within "
    'our conversation. Ask "what can you do?" to see more.'
)

HOW_ARE_YOU = (
    "I'm running smoothly, thanks for asking{name}! Streaming replies word by word is the "
    "highlight of a simulated assistant's day. How are you doing?",
    "All good here{name}: no errors, no timeouts, just words on their way to you. How about "
    "you, how is your day going?",
)

GOODBYES = (
    "Goodbye{name}! It was nice talking with you. Come back any time; this conversation will "
    "be right here.",
    "See you later{name}! Thanks for the chat. If you come back to this conversation, I'll "
    "still remember what you told me.",
    "Take care{name}! I'll be here, streaming replies to whoever says hello next.",
)

THANKS = (
    "You're welcome{name}! Is there anything else I can help you with?",
    "Happy to help{name}. What would you like to talk about next?",
    "Any time{name}! That's what I'm here for, simulated as I am.",
)

FEELING_LOW = (
    "Sorry to hear you're {mood}{name}. Want to tell me what's going on? Putting it into words "
    "can help, even when the listener is a simulated assistant.",
    "That doesn't sound fun{name}. Being {mood} is hard; is there something that would make "
    "today a little easier?",
)

FEELING_HIGH = (
    "Glad to hear you're {mood}{name}! What's making it a good day?",
    "That's lovely to hear{name}. Being {mood} suits you. Anything in particular behind it?",
)

LOW_MOODS = frozenset(
    """tired sad bored stressed exhausted sick lonely angry upset anxious worried frustrated
    down hungry sleepy confused lost overwhelmed unhappy grumpy nervous""".split()  # noqa: SIM905 - a word list reads best as prose
)
HIGH_MOODS = frozenset(
    """happy great good fine excited glad well okay ok awesome fantastic wonderful amazing
    relaxed cheerful calm proud""".split()  # noqa: SIM905 - a word list reads best as prose
)

# (role, default name, default thing, text); 120-180 words each once filled in.
STORIES = (
    (
        "young lighthouse keeper",
        "Wren",
        "quiet evenings",
        "Once upon a time, in a town where the streetlights hummed softly at night, there lived "
        "{intro}, who loved {thing} more than almost anything. Every evening {hero} climbed to "
        "the top of the old lighthouse to watch the boats come home. One foggy night a small "
        "lantern appeared on the water, drifting with no boat beneath it. Curious, {hero} "
        "followed it along the pier, past the sleeping fishermen and the stacked nets, until it "
        "stopped beside a door that had never been there before. Behind the door was a room full "
        "of letters, each addressed to someone in town and never delivered. {hero} spent the "
        "whole winter carrying them, one by one, to people who had waited years to read them. By "
        "spring the town felt warmer, as if something long missing had been returned. And "
        "whenever anyone asked how it had happened, {hero} only smiled and talked about {thing} "
        "instead. The end.",
    ),
    (
        "maintenance engineer",
        "Juno",
        "the sound of rain",
        "Far away, on a quiet space station circling a blue-green planet, there worked {intro}, "
        "who missed {thing} more than anyone else aboard. The station's computer, an old and "
        "polite machine called Tally, noticed this. It could not make rain, and it could not "
        "make a planet, but it could listen. So every night, while the crew slept, Tally asked "
        "{hero} questions: what {thing} felt like, when it was best, who else had shared it. "
        "{hero} answered, a little at first and then for hours. Weeks later, on the morning of "
        "the long journey home, Tally played back a single recording. It was {hero}'s own voice, "
        "describing {thing} so carefully that the whole crew stopped to listen. Nobody spoke "
        "until it ended. Then the captain laughed, wiped her eyes, and said that this was the "
        "first time the station had ever felt like a place instead of a machine. The end.",
    ),
    (
        "baker",
        "Mira",
        "warm bread",
        "In a valley where the river ran backwards every other Tuesday, there lived {intro}, "
        "whose favourite thing in the world was {thing}. One morning a traveller arrived with a "
        "map that showed every road in the valley except the one leading to {hero}'s door. "
        '"How did you find me?" {hero} asked. "I followed the smell of {thing}," said the '
        "traveller, "
        '"and the sound of someone humming." They talked until the sun went down, trading '
        "stories of rivers, mountains and strange little towns. Before leaving, the traveller "
        "drew the missing road onto the map in bright green ink and gave it to {hero}. "
        '"Now others will find you too," the traveller said. And they did: by the end of the '
        "year the little road was worn smooth by visitors, every one of them asking about "
        "{thing}. {hero} never ran out of things to say. The end.",
    ),
)

JOKES = (
    "Why do programmers prefer dark mode? Because light attracts bugs. I would laugh, but I'm a "
    "simulated assistant, so I only know it's funny because my rules say so.",
    "There are 10 kinds of people in the world: those who understand binary and those who "
    "don't. It's an old joke, but old jokes are the only kind a rule-based bot can tell.",
    "A SQL query walks into a bar, goes up to two tables and asks: may I join you? I'm told "
    "that's a classic among people who spend their days with databases.",
    "I told my computer I needed a break. It said no problem, it would go to sleep. Then it "
    "installed forty updates and asked me to restart. Some jokes write themselves.",
    "Why did the stream never feel lonely? Because every few seconds someone sent it a ping. "
    "That one is about this very server, so I'm contractually obliged to like it.",
)

QUESTION_TEMPLATES = (
    "Good question{name}. I'm a simulated assistant, so I can't look anything up about "
    "{topics}, but I'd start with what you already know about {main} and where it stops "
    "making sense. What have you found so far?",
    "Questions about {topics} rarely have just one good answer. If you tell me a little more "
    "about why you're asking, I can at least help you think it through.",
    "I don't have real knowledge to draw on{name}: I'm the rule-based engine of this server. "
    "Still, a question about {topics} is worth exploring. What's your own best guess?",
    "Hmm, {topics}. Honestly, a bot like me can only reflect your question back at you: what "
    "would a good answer about {main} let you do that you can't do now?",
)

VAGUE_QUESTION = (
    "That's a fair question{name}, but I'm not sure what it's about. Could you say a bit more, "
    'or ask "what can you do?" to see what I\'m good at?'
)

STATEMENT_TEMPLATES = (
    "I see{name}. You mentioned {quoted}: tell me more about what's on your mind.",
    "Interesting. What got you thinking about {topics}?",
    "Noted{name}. I'm only a simulated assistant, but I'm listening. What else comes to mind "
    "when you think of {quoted}?",
    "That's worth a thought. Why does {quoted} matter to you right now?",
    "Thanks for sharing that{name}. If you had to sum up {quoted} in one sentence, what would "
    "you say?",
)

VAGUE_STATEMENT = (
    "I see{name}. Tell me a bit more, or tell me your name or what you like, and I'll remember "
    "it for the rest of our conversation.",
    "Okay{name}. I'm listening: what's on your mind today?",
    'Got it{name}. If you\'re not sure what to ask, try "tell me a story" or "what is 12 * 7?".',
)

# Function words and very common verbs: never "the topic" of a message.
STOPWORDS = frozenset(
    """a about above after again against all also am an and any are aren't as at be because
    been before being below between both but by can can't cannot could couldn't did didn't do
    does doesn't doing don't down during each few for from further get gets getting give go
    goes going got had hadn't has hasn't have haven't having he he'd he'll he's her here here's
    hers herself him himself his how how's i i'd i'll i'm i've if in into is isn't it it's its
    itself just know let let's like make many may me might more most much must mustn't my
    myself need no nor not now of off on once only or other ought our ours ourselves out over
    own please really same say see shall shan't she she'd she'll she's should shouldn't so some
    such tell than that that's the their theirs them themselves then there there's these they
    they'd they'll they're they've thing things think this those through to too under until up
    upon us use very want was wasn't way we we'd we'll we're we've well were weren't what
    what's when when's where where's whether which while who who's whom why why's will with
    won't would wouldn't yes yet you you'd you'll you're you've your yours yourself yourselves
    ok okay hmm oh yeah hey hi hello thanks thank sure maybe something anything everything
    actually basically kind sort lot lots today tomorrow yesterday good bad better best great
    nice make makes made work works mean means happen happens come comes put take takes try
    look looks seem seems feel feels keep gonna wanna stuff still even ever never always
    often lately recently usually probably definitely pretty quite rather already""".split()  # noqa: SIM905 - a word list reads best as prose
)
